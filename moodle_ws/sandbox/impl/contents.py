"""core_course_get_contents: sections and their modules (module id = cmid)."""

from typing import Any

from moodle_ws.sandbox.context import Call
from moodle_ws.sandbox.exceptions import MoodleException
from moodle_ws.sandbox.impl.completion import activity_status, completion_enabled, is_tracked
from moodle_ws.sandbox.model import Activity
from moodle_ws.sandbox.phpvalue import clean_param, is_numeric

PURPOSE = {
    "forum": "collaboration",
    "quiz": "assessment",
    "assign": "assessment",
    "page": "content",
    "resource": "content",
    "url": "content",
    "scorm": "interactivecontent",
    "lesson": "interactivecontent",
    "h5pactivity": "interactivecontent",
    "feedback": "communication",
    "label": "content",
}
PLURAL = {
    "forum": "Forums",
    "quiz": "Quizzes",
    "assign": "Assignments",
    "page": "Pages",
    "resource": "Files",
    "url": "URLs",
    "scorm": "SCORM packages",
    "lesson": "Lessons",
    "h5pactivity": "H5P",
    "feedback": "Feedback",
    "label": "Text and media areas",
}
BOOL_OPTIONS = ("excludemodules", "excludecontents", "includestealthmodules")
INT_OPTIONS = ("sectionid", "sectionnumber", "cmid", "modid")


def _invalid(name: str) -> MoodleException:
    return MoodleException(
        "errorinvalidparam", f'The param "{name}" is invalid.', module="webservice"
    )


def _filters(options: list[dict]) -> dict[str, Any]:
    filters: dict[str, Any] = {}
    for option in options:
        name = str(option["name"]).strip()
        if name in filters:
            continue
        value = option["value"]
        if name in BOOL_OPTIONS:
            filters[name] = bool(clean_param(value, "bool"))
        elif name in INT_OPTIONS:
            cleaned = clean_param(value, "int")
            if not is_numeric(cleaned):
                raise _invalid(name)
            filters[name] = cleaned
        elif name == "modname":
            cleaned = clean_param(value, "plugin")
            if not cleaned:
                raise _invalid(name)
            filters[name] = cleaned
        else:
            raise _invalid(name)
    return filters


def _contents(call: Call, cm: Activity) -> tuple[list[dict], dict | None]:
    if cm.modname not in ("page", "resource"):
        return [], None
    filename = "index.html" if cm.modname == "page" else f"{cm.name.lower().replace(' ', '-')}.pdf"
    size = 0 if cm.modname == "page" else 48211
    mimetype = "text/html" if cm.modname == "page" else "application/pdf"
    area = "content"
    url = f"{call.wwwroot}/webservice/pluginfile.php/{cm.contextid}/mod_{cm.modname}/{area}/0/"
    url += filename
    item = {
        "type": "file",
        "filename": filename,
        "filepath": "/",
        "filesize": size,
        "fileurl": url,
        "timecreated": cm.added,
        "timemodified": cm.added,
        "sortorder": 1,
        "mimetype": mimetype,
        "isexternalfile": False,
        "userid": None,
        "author": None,
        "license": "unknown",
    }
    info = {"filescount": 1, "filessize": size, "lastmodified": cm.added, "mimetypes": [mimetype]}
    return [item], info


def _module(call: Call, cm: Activity, with_contents: bool, tracked: bool, track_on: bool) -> dict:
    m: dict[str, Any] = {
        "id": cm.id,
        "name": call.format_string(cm.name),
        "instance": cm.instance,
        "contextid": cm.contextid,
        "visible": cm.visible,
        "uservisible": True,
        "visibleoncoursepage": 1,
        "modicon": f"{call.wwwroot}/theme/image.php/boost/{cm.modname}/1717430000/monologo"
        "?filtericon=1",
        "modname": cm.modname,
        "purpose": PURPOSE.get(cm.modname, "other"),
        "branded": False,
        "modplural": PLURAL.get(cm.modname, cm.modname),
        "indent": 0,
        "onclick": "",
        "afterlink": None,
        "customdata": '""',
        "noviewlink": cm.modname == "label",
        "candisplay": True,
        "completion": cm.completion if track_on else 0,
        "downloadcontent": 1,
        "dates": [],
        "groupmode": 0,
    }
    if cm.modname != "label":
        m["url"] = f"{call.wwwroot}/mod/{cm.modname}/view.php?id={cm.id}"
    if track_on and cm.completion:
        data = activity_status(call, cm, call.user.id, tracked)
        for key in ("cmid", "modname", "instance", "tracking"):
            data.pop(key)
        m["completiondata"] = data
    m["contents"] = []  # set even with excludecontents (the example shows it)
    if with_contents:
        m["contents"], info = _contents(call, cm)
        if info:
            m["contentsinfo"] = info
    return m


def get_course_contents(call: Call, courseid: int, options: list[dict]) -> list[dict]:
    """core_course_get_contents; errorinvalidparam for an unknown option (checked first)."""
    filters = _filters(options)
    site = call.site
    course = call.get_course(courseid)
    call.validate_context_wrapped(course)
    if not (
        course.visible
        or call.has_capability("moodle/course:update")
        or call.has_capability("moodle/course:viewhiddencourses")
    ):
        return []
    track_on = completion_enabled(call, course)
    tracked = is_tracked(call, course, call.user.id)
    out = []
    for section in course.sections:
        if "sectionid" in filters and section.id != filters["sectionid"]:
            continue
        if "sectionnumber" in filters and section.section != filters["sectionnumber"]:
            continue
        summary, summaryformat = call.format_text(section.summary, 1)
        entry: dict[str, Any] = {
            "id": section.id,
            "name": call.format_string(section.name),
            "visible": section.visible,
            "summary": summary,
            "summaryformat": summaryformat,
            "section": section.section,
            "hiddenbynumsections": 0,
            "uservisible": True,
            "modules": [],
        }
        if not filters.get("excludemodules"):
            for cmid in section.cmids:
                cm = site.activities[cmid]
                if "cmid" in filters and cm.id != filters["cmid"]:
                    continue
                if "modname" in filters and cm.modname != filters["modname"]:
                    continue
                if "modid" in filters and cm.instance != filters["modid"]:
                    continue
                entry["modules"].append(
                    _module(call, cm, not filters.get("excludecontents"), tracked, track_on)
                )
        out.append(entry)
    return out
