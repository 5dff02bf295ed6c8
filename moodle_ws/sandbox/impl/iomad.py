"""IOMAD company functions (blocks/iomad_company_admin/externallib.php, local/iomad).

Criteria lists follow IOMAD's pattern: each key once (keyalreadyset), unknown keys become
warnings, exact keys compare cleaned values, text keys use SQL LIKE. get_companies wraps
LIKE values in %...%; get_departments and get_license_info do not.
"""

from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from moodle_ws.sandbox.context import CAPABILITY_NAMES, Call
from moodle_ws.sandbox.exceptions import MoodleException, PHPError, missing_record, nopermissions
from moodle_ws.sandbox.impl.users import key_once, sql_like, unsupported_key
from moodle_ws.sandbox.model import CompanyUser
from moodle_ws.sandbox.phpvalue import clean_param, php_str

CAP = "block/iomad_company_admin:"


def filter_by_criteria(
    rows: Iterable[Any],
    criteria: list[dict],
    exact: dict[str, str],
    like: dict[str, str],
    wrap: bool,
    column: Callable[[Any, str], Any] = getattr,
) -> tuple[list[Any], list[dict]]:
    """Rows matching every criterion, and warnings for unsupported keys."""
    tests, warnings, used = [], [], set()
    for c in criteria:
        key = c["key"]
        key_once(used, key)
        if key in exact:
            value = clean_param(c["value"], exact[key])
            tests.append(lambda r, k=key, v=value: php_str(column(r, k)) == php_str(v))
        elif key in like:
            value = php_str(clean_param(c["value"], like[key]))
            rx = sql_like(f"%{value}%" if wrap else value)
            tests.append(lambda r, k=key, rx=rx: rx.match(php_str(column(r, k))) is not None)
        else:
            warnings.append(unsupported_key(key))
    return [r for r in rows if all(t(r) for t in tests)], warnings


def get_companies(call: Call, criteria: list[dict]) -> dict[str, Any]:
    """block_iomad_company_admin_get_companies: LIKE %v% on text keys, exact on the others."""
    call.require_capability(CAP + "company_add")
    exact = {"id": "int", "parentid": "int", "timezone": "int", "lang": "lang", "suspended": "bool"}
    like = {
        k: "notags"
        for k in (
            "name",
            "shortname",
            "code",
            "address",
            "city",
            "postcode",
            "region",
            "country",
            "custom1",
            "custom2",
            "custom3",
        )
    }
    rows = sorted(call.site.companies.values(), key=lambda c: c.id)
    found, warnings = filter_by_criteria(rows, criteria, exact, like, wrap=True)
    return {"companies": [asdict(c) for c in found], "warnings": warnings}


def get_departments(call: Call, criteria: list[dict]) -> dict[str, Any]:
    """block_iomad_company_admin_get_departments (parent 0 is the top department)."""
    call.require_capability(CAP + "edit_all_departments")
    exact = {"id": "int", "company": "int", "parent": "int"}
    like = {"name": "notags", "shortname": "notags"}
    rows = sorted(call.site.departments.values(), key=lambda d: d.id)
    found, warnings = filter_by_criteria(rows, criteria, exact, like, wrap=False)
    return {"departments": [asdict(d) for d in found], "warnings": warnings}


def get_department_users(call: Call, departmentids: list[int]) -> dict[str, Any]:
    """block_iomad_company_admin_get_department_users: direct members, once per department."""
    call.require_capability(CAP + "editusers")
    site = call.site
    users = []
    for depid in departmentids:
        for row in sorted(site.department_rows(depid), key=lambda r: r.userid):
            u = site.users.get(row.userid)
            if u is not None:
                users.append(
                    {
                        "id": u.id,
                        "firstname": u.firstname,
                        "lastname": u.lastname,
                        "email": u.email,
                        "companyid": row.companyid,
                        "departmentid": row.departmentid,
                    }
                )
    return {"users": users}


def assign_users(call: Call, users: list[dict]) -> dict[str, Any]:
    """block_iomad_company_admin_assign_users: each user into a company department (its top
    department for 0), one outcome per user; already a member: left as is, result true."""
    call.require_capability(CAP + "assign_company_manager")
    site = call.site
    out = []
    for u in users:
        uid, cid, depid = u["userid"], u["companyid"], u["departmentid"]
        user = site.users.get(uid)
        message = ""
        if user is None or user.deleted:
            message = f"Invalid user ID: {uid}"
        elif cid not in site.companies:
            message = f"Invalid company ID: {cid}"
        else:
            if not depid:
                tops = [
                    d.id for d in site.departments.values() if d.company == cid and not d.parent
                ]
                depid = min(tops) if tops else 0
            dep = site.departments.get(depid)
            if dep is None or dep.company != cid:
                message = f"Invalid department ID: {depid}"
            elif not any(cu.companyid == cid for cu in site.user_company_rows(uid)):
                site.company_users.append(CompanyUser(uid, cid, depid, u["managertype"]))
                site.version += 1
        out.append({"userid": uid, "companyid": cid, "result": not message, "message": message})
    return {"users": out}


def get_user_companies(call: Call, userid: int) -> dict[str, Any]:
    """block_iomad_company_admin_get_user_companies (PHP Error if the build is broken)."""
    call.require_capability(CAP + "company_view_all")
    site = call.site
    if userid not in site.users:
        raise missing_record("user", "id = ?", [userid])
    companies: dict[int, dict] = {}
    for row in site.user_company_rows(userid):
        if site.iomad_user_companies_broken:
            raise PHPError('Attempt to assign property "departments" on null')
        company = site.companies[row.companyid]
        entry = companies.setdefault(
            company.id, {"id": company.id, "name": company.name, "departments": []}
        )
        dep = site.departments.get(row.departmentid)
        if dep is not None:
            entry["departments"].append({"id": dep.id, "name": dep.name})
    return {"companies": list(companies.values())}


def check_enrolment(call: Call, criteria: list[dict]) -> list[dict]:
    """block_iomad_company_admin_check_enrolment: active enrolment or an unused, unexpired seat."""
    call.require_capability(CAP + "company_course_users")
    call.require_capability(CAP + "allocate_licenses")
    site = call.site
    out = []
    for c in criteria:
        userid, courseid = c["userid"], c["courseid"]
        e = site.enrolments.get(courseid, {}).get(userid)
        enrolled = e is not None and site.is_active_enrolment(e, call.now)
        if not enrolled:
            enrolled = any(
                a.userid == userid
                and a.licensecourseid == courseid
                and not a.isusing
                and site.licenses[a.licenseid].expirydate > call.now
                for a in site.allocations
            )
        out.append({"userid": userid, "enrolled": enrolled})
    return out


def licenserevoke_user_course(
    call: Call, companyid: int, userid: int, courseid: int, trackid: int, licenseid: int
) -> dict[str, Any]:
    """local_iomad_licenserevoke_user_course: drop the user's seat for the course."""
    site = call.site
    if companyid not in site.companies:
        raise missing_record("company", "id = ?", [companyid])
    call.require_capability("local/report_users:clearentries")
    if not any(r.companyid == companyid for r in site.user_company_rows(userid)):
        raise nopermissions(CAPABILITY_NAMES["local/report_users:clearentries"])
    if userid not in site.users:
        raise missing_record("user", "id = ?", [userid])
    if trackid not in site.tracks:
        raise missing_record("local_iomad_tracks", "id = ?", [trackid])
    site.allocations = [
        a
        for a in site.allocations
        if not (a.userid == userid and a.licenseid == licenseid and a.licensecourseid == courseid)
    ]
    site.tracks[trackid].licenseid = 0
    return {"result": True, "returnmessage": "License revoked"}


def restrict_email_template(
    call: Call, template: str, value: bool, companyid: int, page: int, perpage: int, lang: str
) -> list:
    """local_iomad_restrict_email_template: value 1 enables, 0 disables; answers []."""
    site = call.site
    if companyid not in site.companies:
        raise missing_record("company", "id = ?", [companyid])
    parts = template.split(".", 3)
    if len(parts) != 4 or parts[0] not in ("c", "t") or parts[2] not in ("e", "em", "es"):
        raise MoodleException("invalidtemplate", "error/invalidtemplate")
    kind, ident, target, name = parts
    call.require_capability(
        "local/iomad:email_list" if kind == "c" else "local/iomad:email_templateset_list"
    )
    # value 1 ENABLES the template copy (clears its disabled flag), 0 disables it.
    site.email_template_disabled[(kind, ident, target, name)] = 0 if value else 1
    return []
