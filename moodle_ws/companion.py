"""The ManiReports companion functions (`{prefix}_…`), each optional on a site.

Schedules come back as raw mappings: `schedules.model.Schedule.from_remote` validates
them one by one, so one malformed schedule does not hide the others.
"""

from collections.abc import Mapping
from typing import Any

from moodle_ws.client import MoodleClient, RequestTally
from moodle_ws.types import CloudSetting, LicenseAllocation, NewUser, Warning

DEFAULT_PREFIX = "local_manireports"

# name -> what a site without it loses (shown by `check`)
FUNCTIONS = {
    "get_schedules": "schedules are read from the [schedules] file only",
    "get_cloud_settings": "per-company cloud settings come from [[companies]] in the config only",
    "get_course_completions": "completion is read per learner (one call each, or batched)",
    "record_certificate": "issued certificate links are not written back to Moodle",
    "get_license_allocations": "licence-allocation emails (`send license`) cannot run: "
    "IOMAD itself lists no user's allocations",
    "get_new_users": "`send welcome --since` cannot find new users: give --users or --csv",
}


def names(prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """Full function name -> what its absence disables."""
    return {f"{prefix}_{short}": loss for short, loss in FUNCTIONS.items()}


def get_schedules(
    client: MoodleClient, prefix: str = DEFAULT_PREFIX
) -> tuple[list[Mapping[str, Any]], list[Warning]]:
    answer = client.call(f"{prefix}_get_schedules")
    return (
        list(answer.get("schedules") or ()),
        [Warning.from_json(w) for w in answer.get("warnings") or ()],
    )


def get_cloud_settings(client: MoodleClient, prefix: str = DEFAULT_PREFIX) -> list[CloudSetting]:
    """Per-company cloud settings. Every field is nullable in Moodle's declaration: a null
    threshold or provider means "not set" (the config's value applies), a null enabled
    means off; a row without a company id is left out."""
    answer = client.call(f"{prefix}_get_cloud_settings")
    out = []
    for c in answer.get("companies") or ():
        if c.get("companyid") is None:
            continue
        threshold = c.get("threshold")
        out.append(CloudSetting(
            int(c["companyid"]), bool(int(c.get("enabled") or 0)),
            str(c["email_provider"]) if c.get("email_provider") else None,
            None if threshold is None else int(threshold),
        ))  # fmt: skip
    return out


def get_course_completions(
    client: MoodleClient, courseid: int, prefix: str = DEFAULT_PREFIX,
    *, tally: RequestTally | None = None,
) -> Mapping[str, Any]:  # fmt: skip
    """The raw bulk answer: `{completions: [...], cmcompletions: [...]}` for the course."""
    return client.call(f"{prefix}_get_course_completions", {"courseid": courseid}, tally=tally)


def record_certificate(
    client: MoodleClient, userid: int, courseid: int, url: str, jobid: str,
    prefix: str = DEFAULT_PREFIX,
) -> bool:  # fmt: skip
    answer = client.call(
        f"{prefix}_record_certificate",
        {"userid": userid, "courseid": courseid, "url": url, "jobid": jobid},
    )
    return bool(answer.get("status"))


def get_license_allocations(
    client: MoodleClient, since: int, *, companyid: int = 0, licenseid: int = 0,
    prefix: str = DEFAULT_PREFIX,
) -> list[LicenseAllocation]:  # fmt: skip
    """IOMAD licence seats allocated at or after `since` (unix time), oldest first; one row
    per user, licence and course. 0 for `companyid` or `licenseid` means all."""
    params: dict[str, int] = {"since": int(since)}
    if companyid:
        params["companyid"] = int(companyid)
    if licenseid:
        params["licenseid"] = int(licenseid)
    answer = client.call(f"{prefix}_get_license_allocations", params)
    return [
        LicenseAllocation(
            int(a["licenseid"]),
            int(a["userid"]),
            int(a["licensecourseid"] or 0),
            int(a["issuedate"] or 0),
            bool(a.get("isusing")),
            int(a["companyid"] or 0),
        )  # fmt: skip
        for a in answer.get("allocations") or ()
        if a.get("licenseid") is not None and a.get("userid") is not None
    ]


def get_new_users(
    client: MoodleClient, since: int, companyid: int = 0, prefix: str = DEFAULT_PREFIX,
    *, tally: RequestTally | None = None,
) -> list[NewUser]:  # fmt: skip
    """Users created at or after `since` (epoch seconds), by id; `companyid` > 0 keeps that
    IOMAD company's users. Raises MoodleAPIError (invalidrecord for an unknown company)."""
    answer = client.call(
        f"{prefix}_get_new_users", {"since": int(since), "companyid": int(companyid)}, tally=tally
    )
    return [NewUser.from_json(u) for u in answer.get("users") or ()]
