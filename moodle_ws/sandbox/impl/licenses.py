"""IOMAD licence functions: info, one licence, allocate and (broken) unallocate.

allocate_licenses has no transaction: entries before the first failing one stay
allocated. The stored unallocate_licenses calls `$DB->delete_record()`, which does not
exist, so with `site.iomad_unallocate_broken` (the default) a valid entry ends in a PHP
Error; with the knob off it removes the seat and answers true.
"""

from typing import Any

from moodle_ws.sandbox.context import Call
from moodle_ws.sandbox.exceptions import InvalidParameter, PHPError, missing_record
from moodle_ws.sandbox.impl.iomad import CAP, filter_by_criteria
from moodle_ws.sandbox.model import License, LicenseAllocation


def get_license_info(call: Call, criteria: list[dict]) -> dict[str, Any]:
    """block_iomad_company_admin_get_license_info: licences with allocation > 0."""
    call.require_capability(CAP + "view_licenses")
    site = call.site
    exact = {k: "int" for k in ("id", "companyid", "parentid", "startdate", "expirydate", "type")}
    exact.update(program="bool", instant="bool")
    like = {"name": "notags", "reference": "notags"}
    rows = sorted((lic for lic in site.licenses.values() if lic.allocation > 0), key=lambda x: x.id)
    found, warnings = filter_by_criteria(rows, criteria, exact, like, wrap=False)
    licenses = [
        {
            "id": x.id,
            "name": x.name,
            "allocation": x.allocation,
            "validlength": x.validlength,
            "expirydate": x.expirydate,
            "used": site.license_used(x.id),
            "companyid": x.companyid,
            "parentid": x.parentid,
        }
        for x in found
    ]
    return {"licenses": licenses, "warnings": warnings}


def get_license_from_id(call: Call, licenseid: int) -> dict[str, Any]:
    """block_iomad_company_admin_get_license_from_id; invalidrecord (companylicense)."""
    call.require_capability(CAP + "allocate_licenses")
    site = call.site
    lic = site.licenses.get(licenseid)
    if lic is None:
        raise missing_record("companylicense", "id = ?", [licenseid])
    used = site.license_used(lic.id)
    courses = sorted(
        ({"id": c, "fullname": site.courses[c].fullname} for c in lic.courses if c in site.courses),
        key=lambda c: c["fullname"],
    )
    return {
        "license": {
            "id": lic.id,
            "name": lic.name,
            "allocation": lic.allocation,
            "validlength": lic.validlength,
            "startdate": lic.startdate,
            "expirydate": lic.expirydate,
            "used": used,
            "companyid": lic.companyid,
            "parentid": lic.parentid,
            "type": lic.type,
            "program": bool(lic.program),
            "reference": lic.reference,
            "instant": bool(lic.instant),
            "allallocated": used >= lic.allocation,
        },
        "courses": courses,
    }


def _check_entry(call: Call, entry: dict) -> License:
    site = call.site
    lid, uid, cid = entry["licenseid"], entry["userid"], entry["licensecourseid"]
    lic = site.licenses.get(lid)
    if lic is None:
        raise InvalidParameter(f"License id={lid} does not exist")
    user = site.users.get(uid)
    if user is None or user.deleted:
        raise InvalidParameter(f"User id={uid} does not exist")
    if user.suspended:
        raise InvalidParameter(f"User id={uid} is suspended")
    if not any(r.companyid == lic.companyid for r in site.user_company_rows(uid)):
        raise InvalidParameter(f"Company does not match for license id={lid}")
    if cid not in site.courses:
        raise InvalidParameter(f"Course id={cid} does not exist")
    if cid not in lic.courses:
        raise InvalidParameter(f"Course id={cid} is not inculded in license id {lid}")
    return lic


def allocate_licenses(call: Call, licenses: list[dict]) -> bool:
    """block_iomad_company_admin_allocate_licenses: bare true; the first bad entry raises."""
    call.require_capability(CAP + "allocate_licenses")
    site = call.site
    for entry in licenses:
        lic = _check_entry(call, entry)
        lid, uid, cid = entry["licenseid"], entry["userid"], entry["licensecourseid"]
        if lic.expirydate < call.now:
            raise InvalidParameter(f"License id={lid} has expired")
        if site.license_used(lid) >= lic.allocation:
            raise InvalidParameter(f"License id={lid} has no free slots")
        if any(
            a.userid == uid and a.licensecourseid == cid and a.licenseid == lid and not a.isusing
            for a in site.allocations
        ):
            raise InvalidParameter(f"User id={uid} already has an unused license for that course.")
        site.allocations.append(LicenseAllocation(lid, uid, cid, issuedate=call.now))
    return True


def unallocate_licenses(call: Call, licenses: list[dict]) -> bool:
    """block_iomad_company_admin_unallocate_licenses (broken by default, see module doc)."""
    call.require_capability(CAP + "allocate_licenses")
    site = call.site
    for entry in licenses:
        _check_entry(call, entry)
        lid, uid, cid = entry["licenseid"], entry["userid"], entry["licensecourseid"]
        rows = [
            a
            for a in site.allocations
            if a.licenseid == lid and a.userid == uid and a.licensecourseid == cid
        ]
        if any(a.isusing for a in rows):
            raise InvalidParameter(f"User id={uid} has used the license")
        if site.iomad_unallocate_broken:
            raise PHPError(
                f"Call to undefined method {site.db_family}_native_moodle_database::delete_record()"
            )
        for a in rows:
            site.allocations.remove(a)
    return True
