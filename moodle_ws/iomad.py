"""IOMAD's web-service functions: companies, their users (through departments) and licences.

IOMAD has no "users of a company" function: a company's users are the direct members of
all its departments, so `company_users` lists the departments first.
"""

from collections.abc import Iterable

from moodle_ws.client import MoodleClient, RequestTally
from moodle_ws.encoding import criteria
from moodle_ws.types import Company, CompanyUser, Department, License, UserCompany

PREFIX = "block_iomad_company_admin_"


def companies(client: MoodleClient, **match: str | int) -> list[Company]:
    """Companies matching `match` (text keys match as substrings); all when empty."""
    pairs = list(match.items()) or [("name", "")]  # criteria is required: '' matches all
    answer = client.call(PREFIX + "get_companies", {"criteria": criteria(pairs)})
    return [Company.from_json(c) for c in answer.get("companies") or ()]


def departments(client: MoodleClient, companyid: int) -> list[Department]:
    answer = client.call(
        PREFIX + "get_departments", {"criteria": criteria([("company", companyid)])}
    )
    return [
        Department(
            int(d["id"]), str(d["name"]), str(d["shortname"]), int(d["company"]), int(d["parent"])
        )
        for d in answer.get("departments") or ()
    ]


def department_users(client: MoodleClient, departmentids: Iterable[int]) -> list[CompanyUser]:
    """Direct members of the departments (IOMAD filters neither deleted nor suspended)."""
    ids = [int(i) for i in departmentids]
    if not ids:
        return []
    answer = client.call(PREFIX + "get_department_users", {"departmentids": ids})
    return [
        CompanyUser(
            int(u["id"]),
            str(u["firstname"]),
            str(u["lastname"]),
            str(u["email"]),
            int(u["companyid"]),
            int(u["departmentid"]),
        )
        for u in answer.get("users") or ()
    ]


def company_users(client: MoodleClient, companyid: int) -> list[CompanyUser]:
    """Every user of a company, once, by id: the members of all its departments."""
    users = department_users(client, [d.id for d in departments(client, companyid)])
    unique = {u.id: u for u in users}
    return [unique[k] for k in sorted(unique)]


def user_companies(client: MoodleClient, userid: int) -> list[UserCompany]:
    """The companies user `userid` belongs to, in one request, whatever their role there
    (the answer has no managertype). Needs block/iomad_company_admin:company_view_all;
    some IOMAD builds answer a PHP Error for any user with a company (a typo in the
    stored code): that comes back as a MoodleAPIError."""
    answer = client.call(PREFIX + "get_user_companies", {"userid": int(userid)})
    return [
        UserCompany(
            int(c["id"]),
            str(c["name"]),
            tuple((int(d["id"]), str(d["name"])) for d in c.get("departments") or ()),
        )
        for c in answer.get("companies") or ()
    ]


def _license(d) -> License:
    return License(
        id=int(d["id"]), name=str(d["name"]), allocation=int(d["allocation"]),
        validlength=int(d["validlength"]), expirydate=int(d["expirydate"] or 0),
        used=int(d["used"]), companyid=int(d["companyid"]), parentid=int(d["parentid"] or 0),
    )  # fmt: skip


def licenses(client: MoodleClient, companyid: int) -> list[License]:
    """A company's licences with seats (IOMAD lists only those with allocation > 0)."""
    answer = client.call(
        PREFIX + "get_license_info", {"criteria": criteria([("companyid", companyid)])}
    )
    return [_license(x) for x in answer.get("licenses") or ()]


def license_detail(client: MoodleClient, licenseid: int) -> License:
    """One licence with the courses it covers."""
    answer = client.call(PREFIX + "get_license_from_id", {"licenseid": licenseid})
    raw = answer["license"]
    base = _license(raw)
    courses = tuple((int(c["id"]), str(c["fullname"])) for c in answer.get("courses") or ())
    start = raw.get("startdate")
    return License(
        **{**base.__dict__, "courses": courses, "startdate": None if start is None else int(start)}
    )


def assign_users(
    client: MoodleClient,
    userids: Iterable[int],
    companyid: int,
    departmentid: int = 0,
    *,
    tally: RequestTally | None = None,
) -> dict[int, str]:
    """Put users in a company (its top department for 0), as many a request as
    max_input_vars allows (3 fields each); returns {userid: IOMAD's message} for each user
    it did not assign (empty: all in)."""
    rows = [
        {"userid": int(u), "companyid": int(companyid), "departmentid": int(departmentid)}
        for u in userids
    ]
    chunk = max(1, (client.settings.max_input_vars - 3) // 3)
    refused: dict[int, str] = {}
    for start in range(0, len(rows), chunk):
        answer = client.call(
            PREFIX + "assign_users", {"users": rows[start : start + chunk]}, tally=tally
        )
        refused.update(
            (int(r["userid"]), str(r.get("message") or "not assigned"))
            for r in answer.get("users") or ()
            if not r.get("result")
        )
    return refused
