"""core_completion_get_course_completion_status / get_activities_completion_status.

Checks run in completion/classes/external.php's order. A criterion on an activity is met
when the activity's state is complete, complete-pass or complete-fail (fail still counts).
"""

from typing import Any

from moodle_ws.sandbox.context import Call
from moodle_ws.sandbox.exceptions import MoodleException
from moodle_ws.sandbox.model import (
    COMPLETE,
    COMPLETE_FAIL,
    COMPLETE_PASS,
    ROLE_CAPABILITIES,
    TRACKING_AUTOMATIC,
    TRACKING_MANUAL,
    Activity,
    Course,
)

RULE_TEXT = {
    "completionview": "View",
    "completionusegrade": "Receive a grade",
    "completionpassgrade": "Receive a passing grade",
    "completionsubmit": "Make a submission",
    "completionstatusrequired": "Complete the activity",
}
REQUIREMENT_TEXT = {
    "completionusegrade": "Achieving grade",
    "completionpassgrade": "Achieving passing grade",
}


def is_tracked(call: Call, course: Course, userid: int) -> bool:
    """completion_info::is_tracked_user(): active enrolment with isincompletionreports."""
    e = call.site.enrolments.get(course.id, {}).get(userid)
    return (
        e is not None
        and call.site.is_active_enrolment(e, call.now)
        and "moodle/course:isincompletionreports" in ROLE_CAPABILITIES.get(e.roleid, ())
    )


def completion_enabled(call: Call, course: Course) -> bool:
    """Site and course completion both on (completion_info::is_enabled())."""
    return bool(call.site.completion_enabled and course.enablecompletion)


def _can_view(call: Call, course: Course, userid: int) -> bool:
    # completion_can_view_data()
    if not completion_enabled(call, course):
        return False
    if userid == call.user.id:
        return True
    return call.has_capability("moodle/user:viewuseractivitiesreport") or call.has_capability(
        "report/completion:view"
    )


def get_course_completion_status(call: Call, courseid: int, userid: int) -> dict[str, Any]:
    """core_completion_get_course_completion_status; raises in Moodle's order (see module doc)."""
    course = call.get_course(courseid)
    user = call.get_user(userid)
    call.validate_context(course)
    if not _can_view(call, course, user.id):
        raise MoodleException("cannotviewreport", "You cannot view this report")
    if not is_tracked(call, course, user.id):
        if user.id == call.user.id:
            raise MoodleException(
                "notenroled", "You are not enrolled in this course", module="completion"
            )
        raise MoodleException(
            "usernotenroled", "User is not enrolled in this course", module="completion"
        )
    if not course.criteria:
        raise MoodleException(
            "nocriteriaset", "No completion criteria set for this course", module="completion"
        )
    site = call.site
    rows = []
    for cmid in course.criteria:
        cm = site.activities[cmid]
        state, when = site.cm_states.get(cmid, {}).get(user.id, (0, 0))
        done = state in (COMPLETE, COMPLETE_PASS, COMPLETE_FAIL)
        rows.append(
            {
                "type": 4,
                "title": "Activity completion",
                "status": "Yes" if done else "No",
                "complete": done,
                "timecompleted": when if done else None,
                "details": {
                    "type": "Activity completion",
                    "criteria": f'<a href="{call.wwwroot}/mod/{cm.modname}/view.php?id={cm.id}">'
                    f"{call.format_string(cm.name)}</a>",
                    "requirement": _requirement(cm),
                    "status": "",
                },
            }
        )
    completed = user.id in site.course_completions.get(course.id, {})
    return {
        "completionstatus": {
            "completed": completed,
            "aggregation": course.aggregation,
            "completions": rows,
        },
        "warnings": [],
    }


def _requirement(cm: Activity) -> str:
    if cm.completion == TRACKING_MANUAL:
        return "Marking complete"
    parts = []
    for rule in cm.rules:
        if rule == "completionview":
            parts.append(f"Viewing the {cm.modname}")
        elif rule in REQUIREMENT_TEXT:
            parts.append(REQUIREMENT_TEXT[rule])
    return ", ".join(parts)


def _rule_status(rule: str, state: int) -> int:
    if state == 0:
        return 0
    if rule == "completionpassgrade":
        return state if state in (COMPLETE_PASS, COMPLETE_FAIL) else COMPLETE_PASS
    return COMPLETE


def activity_status(call: Call, cm: Activity, userid: int, tracked: bool) -> dict[str, Any]:
    """One entry of statuses[] (also completiondata in core_course_get_contents)."""
    state, when = call.site.cm_states.get(cm.id, {}).get(userid, (0, 0))
    automatic = cm.completion == TRACKING_AUTOMATIC
    details = []
    if automatic:
        details = [
            {
                "rulename": r,
                "rulevalue": {"status": _rule_status(r, state), "description": RULE_TEXT.get(r, r)},
            }
            for r in cm.rules
        ]
    if cm.completion == TRACKING_MANUAL:
        overall = {COMPLETE}
    elif "completionpassgrade" in cm.rules:
        overall = {COMPLETE, COMPLETE_PASS}
    else:
        overall = {COMPLETE, COMPLETE_PASS, COMPLETE_FAIL}
    return {
        "cmid": cm.id,
        "modname": cm.modname,
        "instance": cm.instance,
        "state": state,
        "timecompleted": when,
        "tracking": cm.completion,
        "overrideby": None,
        "valueused": cm.valueused,
        "hascompletion": True,
        "isautomatic": automatic,
        "istrackeduser": tracked,
        "uservisible": bool(cm.visible),
        "details": details,
        "isoverallcomplete": state in overall,
    }


def get_activities_completion_status(call: Call, courseid: int, userid: int) -> dict[str, Any]:
    """core_completion_get_activities_completion_status: [] when completion is off, no error."""
    course = call.get_course(courseid)
    user = call.get_user(userid)
    call.validate_context(course)
    if user.id != call.user.id:
        call.require_capability("report/progress:view")
    statuses = []
    if completion_enabled(call, course):
        tracked = is_tracked(call, course, user.id)
        for cm in call.site.course_activities(course.id):
            if cm.completion and cm.visible:
                statuses.append(activity_status(call, cm, user.id, tracked))
    return {"statuses": statuses, "warnings": []}
