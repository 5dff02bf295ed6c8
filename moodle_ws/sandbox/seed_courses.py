"""Courses, activities, enrolments and completion data of the seeded site (see seed.py)."""

import random

from moodle_ws.sandbox.model import (
    COMPLETE,
    COMPLETE_FAIL,
    COMPLETE_PASS,
    EDITINGTEACHER,
    TRACKING_MANUAL,
    TRACKING_NONE,
    Activity,
    Course,
    Enrolment,
    Group,
    Section,
)
from moodle_ws.sandbox.names import COURSE_NAMES
from moodle_ws.sandbox.site import Site

DAY = 86400

# modname -> (tracking, completion rules); cycled through for each course's activities.
ACTIVITY_KINDS = [
    ("page", 2, ("completionview",)),
    ("quiz", 2, ("completionusegrade", "completionpassgrade")),
    ("lesson", TRACKING_MANUAL, ()),
    ("assign", 2, ("completionsubmit", "completionusegrade")),
    ("scorm", 2, ("completionstatusrequired",)),
    ("h5pactivity", 2, ("completionusegrade",)),
    ("resource", 2, ("completionview",)),
    ("url", TRACKING_MANUAL, ()),
    ("feedback", 2, ("completionsubmit",)),
]
ACTIVITY_TITLES = {
    "page": "Site rules",
    "quiz": "Knowledge check",
    "lesson": "Guided lesson",
    "assign": "Practical assignment",
    "scorm": "Interactive module",
    "h5pactivity": "Video quiz",
    "resource": "Reference handbook",
    "url": "External guidance",
    "feedback": "Course feedback",
}


class Ids:
    """Sequences for the ids the generator hands out."""

    def __init__(self, **starts: int):
        self.next = dict(starts)

    def __call__(self, name: str) -> int:
        value = self.next[name]
        self.next[name] = value + 1
        return value


def _course(
    site: Site, cid: int, name: str, short: str, rng: random.Random, now: int, **kw
) -> Course:
    start = now - rng.randrange(120, 300) * DAY
    course = Course(
        id=cid,
        category=2 if cid % 2 == 0 else 3,
        shortname=short,
        fullname=name,
        idnumber=f"{short}-{2025}",
        summary=f"<p>{name}: mandatory training.</p>",
        startdate=start,
        enddate=start + 365 * DAY,
        timecreated=start - 10 * DAY,
        timemodified=start,
        cacherev=start + 123,
        sortorder=20000 + cid,
        formatoptions={"hiddensections": 1, "coursedisplay": 0},
        customfields=[("ownerteam", "Owner team", "text", "HSE")],
        contacts=site.teacher_ids[:1],
        enrolmethods=["manual", "self"] if cid % 2 == 0 else ["manual"],
    )
    for key, value in kw.items():
        setattr(course, key, value)
    site.courses[cid] = course
    site.enrolments[cid] = {}
    site.course_completions[cid] = {}
    return course


def _activities(site: Site, course: Course, count: int, ids: Ids, now: int) -> None:
    general = Section(ids("section"), 0, "General")
    forum = Activity(
        ids("cm"),
        course.id,
        "forum",
        ids("instance"),
        "Announcements",
        0,
        completion=TRACKING_NONE,
        rules=(),
        contextid=ids("context"),
        added=course.startdate,
    )
    site.activities[forum.id] = forum
    general.cmids.append(forum.id)
    course.sections = [general]
    topics = max(1, min(3, count))
    for t in range(1, topics + 1):
        course.sections.append(Section(ids("section"), t, f"Topic {t}"))
    for i in range(count):
        modname, tracking, rules = ACTIVITY_KINDS[i % len(ACTIVITY_KINDS)]
        title = ACTIVITY_TITLES[modname] + (
            f" {i // len(ACTIVITY_KINDS) + 1}" if i >= len(ACTIVITY_KINDS) else ""
        )
        section = course.sections[1 + i % topics]
        cm = Activity(
            ids("cm"),
            course.id,
            modname,
            ids("instance"),
            title,
            section.section,
            completion=tracking,
            rules=rules,
            contextid=ids("context"),
            valueused=modname == "quiz",
            added=course.startdate + i * DAY,
        )
        site.activities[cm.id] = cm
        section.cmids.append(cm.id)
        if course.enablecompletion:
            course.criteria.append(cm.id)


def build_courses(site: Site, spec, rng: random.Random, now: int, ids: Ids) -> None:
    """The front page, the normal courses, the two special courses and the groups."""
    site.categories = {1: "Miscellaneous", 2: "Compliance", 3: "Professional skills"}
    front = _course(
        site,
        1,
        spec.sitename,
        "sandbox",
        rng,
        now,
        category=0,
        format="site",
        enablecompletion=0,
        showcompletionconditions=None,
        customfields=[],
        contacts=[],
        summary="",
        idnumber="",
        enrolmethods=[],
    )
    front.sections = [Section(ids("section"), 0, "Site home")]
    for n in range(spec.courses):
        name, short = COURSE_NAMES[n % len(COURSE_NAMES)]
        if n >= len(COURSE_NAMES):
            name, short = (
                f"{name} {n // len(COURSE_NAMES) + 1}",
                f"{short}-{n // len(COURSE_NAMES) + 1}",
            )
        course = _course(site, 2 + n, name, short, rng, now, aggregation=2 if n == 1 else 1)
        _activities(site, course, spec.activities_per_course, ids, now)
    site.main_course_id = 2
    cid = 2 + spec.courses
    off = _course(site, cid, "Induction Video Library", "VIDEO-001", rng, now, enablecompletion=0)
    _activities(site, off, 2, ids, now)
    for cmid in (c for s in off.sections for c in s.cmids):
        site.activities[cmid].completion = site.activities[cmid].completion or TRACKING_MANUAL
    site.course_completion_disabled_id = cid
    none = _course(site, cid + 1, "Open Learning Lounge", "LOUNGE-001", rng, now)
    _activities(site, none, 2, ids, now)
    none.criteria = []
    site.course_no_criteria_id = cid + 1
    main = site.courses[site.main_course_id]
    for gname in ("Group A", "Group B"):
        gid = ids("group")
        site.groups[gid] = Group(gid, main.id, gname, f"<p>{gname} learners</p>")


def enrol_and_complete(site: Site, spec, rng: random.Random, now: int) -> None:
    """Enrolments, course access times, course and activity completion."""
    learners = site.learner_ids
    named = set(learners[:3])
    special = {site.course_completion_disabled_id, site.course_no_criteria_id}
    for cid, course in site.courses.items():
        if cid == 1:
            continue
        enrolled = site.enrolments[cid]
        for teacher in site.teacher_ids:
            enrolled[teacher] = Enrolment(
                EDITINGTEACHER,
                timestart=course.startdate,
                lastaccess=now - rng.randrange(1, 20) * DAY,
            )
        if cid == site.main_course_id:
            members = learners
        elif cid in special:
            members = learners[:20]
        else:
            members = [u for u in learners if rng.random() < spec.other_course_fraction]
        for uid in members:
            user = site.users[uid]
            status = 1 if rng.random() < spec.suspended_fraction else 0
            status = 0 if uid in named else status
            access = (
                0
                if not user.lastaccess
                else rng.randrange(course.startdate, user.lastaccess + 1)
                if user.lastaccess > course.startdate
                else 0
            )
            enrolled[uid] = Enrolment(timestart=course.startdate, status=status, lastaccess=access)
            if cid != site.course_completion_disabled_id:
                _complete(site, course, uid, spec, rng, now)
    main = site.courses[site.main_course_id]
    groups = [g for g in site.groups.values() if g.courseid == main.id]
    for uid in learners:
        if uid % 3 < len(groups):
            groups[uid % 3].members.add(uid)
    site.version += 1


def _complete(site: Site, course: Course, uid: int, spec, rng: random.Random, now: int) -> None:
    tracked = [
        site.activities[c]
        for s in course.sections
        for c in s.cmids
        if site.activities[c].completion
    ]
    if not tracked:
        return
    completed = bool(course.criteria) and rng.random() < spec.completed_fraction
    begin = max(course.startdate, now - 200 * DAY)
    latest = 0
    # Not completed: ALL misses one criterion, ANY must miss every one.
    missing = (
        set()
        if completed
        else (
            set(range(len(tracked))) if course.aggregation == 2 else {rng.randrange(len(tracked))}
        )
    )
    for i, cm in enumerate(tracked):
        if i in missing or (not completed and rng.random() < 0.5):
            continue
        if cm.modname == "quiz":
            state = COMPLETE_PASS if rng.random() < 0.85 else COMPLETE_FAIL
        elif "completionusegrade" in cm.rules and rng.random() < 0.2:
            state = COMPLETE_FAIL
        else:
            state = COMPLETE
        when = rng.randrange(begin, now - DAY)
        latest = max(latest, when)
        site.cm_states.setdefault(cm.id, {})[uid] = (state, when)
    if completed:
        site.course_completions[course.id][uid] = min(latest + rng.randrange(60, 3600), now - 60)
