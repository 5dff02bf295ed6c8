"""The ManiReports companion functions (docs/moodle.md), registered under a prefix."""

from typing import Any

from moodle_ws.sandbox.context import Call
from moodle_ws.sandbox.exceptions import MoodleException, missing_record
from moodle_ws.sandbox.impl.completion import completion_enabled, is_tracked

MANAGE = "local/manireports:manage"


def get_schedules(call: Call) -> dict[str, Any]:
    """{prefix}_get_schedules: the site's schedules; nopermissions without the manage capability."""
    call.require_capability(MANAGE)
    return {"schedules": [dict(s) for s in call.site.schedules], "warnings": []}


def get_cloud_settings(call: Call) -> dict[str, Any]:
    """{prefix}_get_cloud_settings: per-company offload settings."""
    call.require_capability(MANAGE)
    return {"companies": [dict(c) for c in call.site.cloud_settings]}


def get_course_completions(call: Call, courseid: int) -> dict[str, Any]:
    """Every tracked user's course completion and every activity row with state > 0."""
    course = call.get_course(courseid)
    call.validate_context(course)
    if not completion_enabled(call, course):
        raise MoodleException("cannotviewreport", "You cannot view this report")
    call.require_capability("report/completion:view")
    site = call.site
    done = site.course_completions.get(course.id, {})
    # "Enrolled" as core's completion report means it: tracked users (active student
    # enrolments), so this agrees with per-user core_completion_get_course_completion_status.
    completions = [
        {"userid": uid, "timecompleted": done[uid]}
        for uid in sorted(done)
        if is_tracked(call, course, uid)
    ]
    cmcompletions = []
    for cm in site.course_activities(course.id):
        rows = site.cm_states.get(cm.id, {})
        cmcompletions.extend(
            {"cmid": cm.id, "userid": uid, "state": state, "timemodified": when}
            for uid, (state, when) in sorted(rows.items())
            if state > 0
        )
    answer: dict[str, Any] = {"completions": completions, "cmcompletions": cmcompletions}
    if site.companion_unmailable:
        # Read from the user table, as email_to_user() reads it: no capability hides it.
        users = site.users
        answer["unmailable"] = [
            {"userid": uid, "suspended": int(bool(users[uid].suspended)), "auth": users[uid].auth}
            for uid in sorted(site.enrolments.get(course.id, {}))
            if not users[uid].deleted and (users[uid].suspended or users[uid].auth == "nologin")
        ]
    return answer


def record_certificate(call: Call, userid: int, courseid: int, url: str, jobid: str) -> dict:
    """{prefix}_record_certificate: appended to site.recorded_certificates."""
    call.require_capability(MANAGE)
    site = call.site
    if userid not in site.users:
        raise missing_record("user", "id = ?", [userid])
    call.get_course(courseid)
    site.recorded_certificates.append(
        {
            "userid": userid,
            "courseid": courseid,
            "url": url,
            "jobid": jobid,
            "timecreated": call.now,
        }
    )
    return {"status": True}


def get_license_allocations(call: Call, since: int, companyid: int, licenseid: int) -> dict:
    """{prefix}_get_license_allocations: IOMAD's companylicense_users rows with issuedate >=
    since (0 company or licence: all), oldest first; a licence whose row is gone is left out."""
    call.require_capability(MANAGE)
    site = call.site
    rows = []
    for a in site.allocations:
        lic = site.licenses.get(a.licenseid)
        if lic is None or a.issuedate < since:
            continue
        if (companyid and lic.companyid != companyid) or (licenseid and a.licenseid != licenseid):
            continue
        rows.append(
            {
                "licenseid": a.licenseid,
                "userid": a.userid,
                "licensecourseid": a.licensecourseid,
                "issuedate": a.issuedate,
                "isusing": a.isusing,
                "companyid": lic.companyid,
            }
        )
    rows.sort(key=lambda r: (r["issuedate"], r["licenseid"], r["userid"], r["licensecourseid"]))
    return {"allocations": rows, "warnings": []}


def get_new_users(call: Call, since: int, companyid: int = 0) -> dict[str, Any]:
    """{prefix}_get_new_users: confirmed, not deleted users created at or after `since`, by
    id; `companyid` > 0 keeps that IOMAD company's users (invalidrecord if it is unknown)."""
    call.require_capability(MANAGE)
    site = call.site
    members: set[int] | None = None
    if companyid:
        if companyid not in site.companies:
            raise missing_record("company", "id = ?", [companyid])
        members = {cu.userid for cu in site.company_users if cu.companyid == companyid}
    users = [
        {
            "id": u.id,
            "username": u.username,
            "firstname": u.firstname,
            "lastname": u.lastname,
            "email": u.email,
            "auth": u.auth,
            "suspended": int(bool(u.suspended)),
            "timecreated": u.timecreated,
        }
        for uid, u in sorted(site.users.items())
        if u.timecreated >= since
        and not u.deleted
        and u.confirmed
        and uid != site.guest_id
        and (members is None or uid in members)
    ]
    return {"users": users, "warnings": []}
