"""core_course_get_courses and core_course_get_courses_by_field (course/externallib.php)."""

from typing import Any

from moodle_ws.sandbox.context import SITEID, Call
from moodle_ws.sandbox.exceptions import InvalidParameter
from moodle_ws.sandbox.model import Course
from moodle_ws.sandbox.phpvalue import clean_param, php_str

ACCESS_FIELDS = (
    "format",
    "showgrades",
    "newsitems",
    "startdate",
    "enddate",
    "maxbytes",
    "showreports",
    "visible",
    "groupmode",
    "groupmodeforce",
    "defaultgroupingid",
    "enablecompletion",
    "completionnotify",
    "lang",
    "theme",
    "marker",
)
MANAGER_FIELDS = (
    "idnumber",
    "legacyfiles",
    "calendartype",
    "timecreated",
    "timemodified",
    "requested",
    "cacherev",
)
# What get_generated_url_for_course() gives a course without an image (a data: URL).
GENERATED_IMAGE = (
    "data:image/svg+xml;base64,PHN2ZyB4bWxucz0iaHR0cDovL3d3dy53My5vcmcvMjAwMC9zdmciLz4="
)
FILTERS = (("mathjaxloader", 0, 1), ("activitynames", 0, 1), ("mediaplugin", 0, 1))


def _customfields(course: Course) -> list[dict]:
    return [
        {"type": t, "value": v, "valueraw": v, "name": n, "shortname": s}
        for s, n, t, v in course.customfields
    ]


def _visible_to(call: Call, course: Course) -> bool:
    return (
        bool(course.visible)
        or call.has_capability("moodle/course:viewhiddencourses")
        or (call.has_capability("moodle/course:update"))
    )


def get_courses(call: Call, options: dict) -> list[dict]:
    """core_course_get_courses: every selected course must validate and need moodle/course:view."""
    site = call.site
    ids = options.get("ids") or []
    courses = (
        sorted(site.courses.values(), key=lambda c: c.id)
        if not ids
        else [site.courses[i] for i in sorted(set(ids)) if i in site.courses]
    )
    out = []
    for course in courses:
        call.validate_context_wrapped(course)
        if course.id != SITEID:
            call.require_capability("moodle/course:view")
        info: dict[str, Any] = {
            "id": course.id,
            "fullname": call.format_string(course.fullname),
            "shortname": call.format_string(course.shortname),
            "displayname": call.format_string(course.fullname),
            "categoryid": course.category,
            "format": course.format,
            "startdate": course.startdate,
            "enddate": course.enddate,
            "showactivitydates": course.showactivitydates,
            "showcompletionconditions": course.showcompletionconditions,
        }
        info["summary"], info["summaryformat"] = call.format_text(
            course.summary, course.summaryformat
        )
        if course.customfields:
            info["customfields"] = _customfields(course)
        if call.has_capability("moodle/course:update"):
            info.update(
                categorysortorder=course.sortorder,
                idnumber=course.idnumber,
                showgrades=course.showgrades,
                showreports=course.showreports,
                newsitems=course.newsitems,
                visible=course.visible,
                maxbytes=course.maxbytes,
                numsections=max(len(course.sections) - 1, 0),
                groupmode=course.groupmode,
                groupmodeforce=course.groupmodeforce,
                defaultgroupingid=course.defaultgroupingid,
                lang=clean_param(course.lang, "lang"),
                timecreated=course.timecreated,
                timemodified=course.timemodified,
                forcetheme=clean_param(course.theme, "theme"),
                enablecompletion=course.enablecompletion,
                completionnotify=course.completionnotify,
                courseformatoptions=[
                    {"name": k, "value": v} for k, v in course.formatoptions.items()
                ],
            )
        if _visible_to(call, course):
            out.append(info)
    return out


def public_information(call: Call, course: Course) -> dict[str, Any]:
    """get_course_public_information(): what anyone who may see the course info gets."""
    site = call.site
    summary, summaryformat = call.format_text(course.summary, course.summaryformat)
    contacts = [
        {"id": uid, "fullname": site.users[uid].fullname}
        for uid in course.contacts
        if uid in site.users and not site.users[uid].deleted
    ]
    info: dict[str, Any] = {
        "id": course.id,
        "fullname": call.format_string(course.fullname),
        "displayname": call.format_string(course.fullname),
        "shortname": call.format_string(course.shortname),
        "categoryid": course.category,
        "categoryname": call.format_string(site.categories.get(course.category, "")),
        "summary": summary,
        "summaryformat": summaryformat,
        "summaryfiles": [],
        "overviewfiles": [],
        "contacts": contacts,
        "enrollmentmethods": list(course.enrolmethods),
        "sortorder": course.sortorder,
        "showactivitydates": course.showactivitydates,
        "showcompletionconditions": course.showcompletionconditions,
        "courseimage": GENERATED_IMAGE,
    }
    if course.customfields:
        info["customfields"] = _customfields(course)
    return info


def _select(call: Call, field: str, value: str) -> tuple[list[Course], list[dict]]:
    site = call.site
    by_id = sorted(site.courses.values(), key=lambda c: c.id)
    if field == "":
        return by_id, []
    if field in ("id", "category", "sectionid"):
        v = clean_param(value, "int")
        if field == "id":
            return [c for c in by_id if c.id == v], []
        if field == "category":
            return [c for c in by_id if c.category == v], []
        return [c for c in by_id if any(s.id == v for s in c.sections)][:1], []
    if field == "shortname":
        v = clean_param(value, "text")
        return [c for c in by_id if c.shortname == v], []
    if field == "idnumber":
        return [c for c in by_id if c.idnumber == php_str(value)], []
    if field == "ids":
        courses, warnings, seen = [], [], set()
        for raw in clean_param(value, "sequence").split(","):
            cid: Any = int(raw) if raw.isdigit() else raw
            if cid in seen:
                continue  # array_unique
            seen.add(cid)
            course = site.courses.get(cid) if isinstance(cid, int) else None
            if course is None or call.can_enter(course):
                warnings.append(
                    {
                        "item": "course",
                        "itemid": cid,
                        "warningcode": "1",
                        "message": "No access rights in course context",
                    }
                )
            if course is not None:
                courses.append(course)
        return courses, warnings
    raise InvalidParameter("Invalid field name")


def get_courses_by_field(call: Call, field: str, value: str) -> dict[str, Any]:
    """core_course_get_courses_by_field: public fields only where the course cannot be entered."""
    courses, warnings = _select(call, field, value)
    out = []
    for course in courses:
        if not _visible_to(call, course):
            continue
        info = public_information(call, course)
        if call.can_enter(course):
            out.append(info)  # public information only
            continue
        info["filters"] = [
            {"filter": f, "localstate": s, "inheritedstate": i} for f, s, i in FILTERS
        ]
        fields = ACCESS_FIELDS + (
            MANAGER_FIELDS if call.has_capability("moodle/course:update") else ()
        )
        for name in fields:
            info[name] = getattr(course, name)
        info["theme"] = clean_param(info["theme"], "theme")
        info["lang"] = clean_param(info["lang"], "lang")
        if course.formatoptions:
            info["courseformatoptions"] = [
                {"name": k, "value": v} for k, v in course.formatoptions.items()
            ]
        out.append(info)
    return {"courses": out, "warnings": warnings}
