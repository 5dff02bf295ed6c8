"""`generate_site(SiteSpec(...))`: a deterministic sandbox site from a seed.

Everything comes from `random.Random(spec.seed)` and `spec.now`; the clock is read only
when `now=None` is asked for. Layout (ids are stable for a given spec):

- users 1 guest, 2 admin (site admin), 3 `manager` (the token user, password
  "password"), learners from 101 (the first three are Łukasz Żółć, Дмитрий Иванов,
  Ελένη Παπαδοπούλου, always actively enrolled), then an outsider enrolled nowhere, a
  deleted user and two editing teachers (`teacher_ids`, enrolled in every course);
- course 1 the front page, 2.. the `courses` normal courses (2 = `main_course_id`, every
  learner enrolled), then one with completion disabled and one with completion on but no
  criteria; each normal course has a forum without tracking plus `activities_per_course`
  tracked activities, all of them criteria (course 3 aggregates ANY, the others ALL);
- IOMAD companies with a top department and children, learners spread over them, licences
  with allocations; companion schedules and cloud settings.
"""

import random
import time
from dataclasses import dataclass

from moodle_ws.sandbox import seed_courses, seed_iomad
from moodle_ws.sandbox.model import (
    ProfileField,
    Service,
    Token,
    User,
)
from moodle_ws.sandbox.names import FIRST_LEARNERS, LOCALES, ascii_slug
from moodle_ws.sandbox.seed_courses import Ids
from moodle_ws.sandbox.site import DEFAULT_TOKEN_CAPABILITIES, Site
from moodle_ws.sandbox.spec import companion_specs, core_specs, iomad_specs

DEFAULT_NOW = 1764633600  # 2025-12-02 00:00 UTC
DAY = 86400
FIRST_LEARNER_ID = 101
TEACHERS = (("Bob", "Smith"), ("Hélène", "Lefèvre"))


@dataclass(frozen=True)
class SiteSpec:
    """What to generate. `now=None` reads the clock; every other input is the seed."""

    seed: int = 1
    learners: int = 500
    courses: int = 3
    activities_per_course: int = 4
    companies: int = 2
    completed_fraction: float = 0.4
    now: int | None = DEFAULT_NOW
    suspended_fraction: float = 0.05  # suspended enrolments
    never_accessed_fraction: float = 0.1  # firstaccess = lastaccess = 0
    other_course_fraction: float = 0.5  # share of learners in each course but the main one
    no_company_fraction: float = 0.1
    schedules: int = 3
    sitename: str = "Sandbox Academy"
    companion_prefix: str = "local_manireports"


def generate_site(spec: SiteSpec = SiteSpec()) -> Site:
    """Build a fresh `Site` from `spec` (same spec, same site)."""
    now = int(time.time()) if spec.now is None else int(spec.now)
    rng = random.Random(spec.seed)
    site = Site(now=now, seed=spec.seed)
    site.sitename = spec.sitename
    site.companion_prefix = spec.companion_prefix
    ids = Ids(cm=40, instance=1, context=200, section=30, group=1)
    _people(site, spec, rng, now)
    _services(site, spec, rng, now)
    seed_courses.build_courses(site, spec, rng, now, ids)
    seed_courses.enrol_and_complete(site, spec, rng, now)
    seed_iomad.build(site, spec, rng, now)
    site.next_ids.update({"user": max(site.users), "message": 5000, "conversation": 80})
    return site


def _people(site: Site, spec: SiteSpec, rng: random.Random, now: int) -> None:
    site.profile_fields = [
        ProfileField("region", "Region"),
        ProfileField("employeeid", "Employee ID"),
    ]
    site.add_user(
        User(1, "guest", "", "Guest user", " ", "root@localhost", timecreated=now - 400 * DAY)
    )
    admin = User(
        2,
        "admin",
        "Admin-pass1!",
        "Admin",
        "User",
        "admin@example.com",
        timecreated=now - 400 * DAY,
        firstaccess=now - 400 * DAY,
        lastaccess=now - DAY,
    )
    site.add_user(admin)
    site.siteadmins.add(2)
    manager = User(
        3,
        "manager",
        "password",
        "Offload",
        "Manager",
        "manager@example.com",
        timecreated=now - 300 * DAY,
        firstaccess=now - 300 * DAY,
        lastaccess=now - 3600,
        department="IT",
        institution="Sandbox Academy",
    )
    site.add_user(manager)
    site.token_user_id = 3
    site.user_capabilities[3] = set(DEFAULT_TOKEN_CAPABILITIES)
    # Teachers get ids after the learners, so a course's participants in id order begin
    # with learners (the named three first, always with an active enrolment).
    teachers = FIRST_LEARNER_ID + spec.learners + 2
    site.teacher_ids = [teachers, teachers + 1]
    for uid, (first, last) in zip(site.teacher_ids, TEACHERS, strict=True):
        site.add_user(
            User(
                uid,
                f"teacher{uid}",
                "Teacher-pass1!",
                first,
                last,
                f"teacher{uid}@example.com",
                timecreated=now - 300 * DAY,
                firstaccess=now - 290 * DAY,
                lastaccess=now - 2 * DAY,
                description="<p>Course tutor.</p>",
            )
        )
    for n in range(spec.learners):
        site.add_user(_learner(FIRST_LEARNER_ID + n, n, spec, rng, now))
        site.learner_ids.append(FIRST_LEARNER_ID + n)
    nxt = FIRST_LEARNER_ID + spec.learners
    site.outsider_user_id = nxt
    site.add_user(
        User(
            nxt,
            f"outsider{nxt}",
            "Outsider-pass1!",
            "Olga",
            "Outsider",
            f"outsider{nxt}@example.org",
            timecreated=now - 30 * DAY,
        )
    )
    site.deleted_user_id = nxt + 1
    site.add_user(
        User(
            nxt + 1,
            f"deleted{nxt + 1}@example.org.{now}",
            "",
            "Deleted",
            "User",
            f"deleted{nxt + 1}@example.org",
            deleted=1,
            timecreated=now - 90 * DAY,
        )
    )


def _learner(uid: int, n: int, spec: SiteSpec, rng: random.Random, now: int) -> User:
    if n < len(FIRST_LEARNERS):
        first, last, li = FIRST_LEARNERS[n]
        locale = LOCALES[li]
    else:
        locale = LOCALES[rng.randrange(len(LOCALES))]
        first, last = rng.choice(locale[3]), rng.choice(locale[4])
    lang, country, cities = locale[0], locale[1], locale[2]
    slug = ".".join(s for s in (ascii_slug(first), ascii_slug(last)) if s)
    local = f"{slug}.{uid}" if slug else f"learner{uid}"
    domain = "example.org" if uid % 2 else "example.com"
    created = now - rng.randrange(60, 400) * DAY
    if rng.random() < spec.never_accessed_fraction:
        first_access = last_access = 0
    else:
        first_access = created + rng.randrange(0, 30) * DAY
        last_access = rng.randrange(first_access, now)
    user = User(
        uid,
        (f"{slug}{uid}" if slug else f"learner{uid}"),
        "Learner-pass1!",
        first,
        last,
        f"{local}@{domain}",
        lang=lang,
        country=country,
        city=rng.choice(cities),
        idnumber=f"EMP-{uid:05d}",
        timecreated=created,
        firstaccess=first_access,
        lastaccess=last_access,
        timezone=rng.choice(("99", "99", "Europe/London")),
    )
    if rng.random() < 0.6:
        user.customfields["region"] = rng.choice(("North", "South", "East", "West"))
    return user


def _services(site: Site, spec: SiteSpec, rng: random.Random, now: int) -> None:
    names = set(core_specs()) | set(iomad_specs()) | set(companion_specs(spec.companion_prefix))
    mobile = {n for n, s in core_specs().items() if s.raw.get("mobile_service")}
    site.services[1] = Service(1, "offload_service", "Offload service", names)
    site.services[2] = Service(
        2, "moodle_mobile_app", "Moodle mobile web service", mobile, downloadfiles=1, uploadfiles=1
    )
    site.services[3] = Service(
        3,
        "restricted_service",
        "Restricted service",
        {"core_webservice_get_site_info"},
        restrictedusers=1,
    )
    site.service_id = 1
    token = f"{rng.getrandbits(128):032x}"
    private = "".join(
        rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789") for _ in range(64)
    )
    site.tokens[token] = Token(token, 3, 1, private, validuntil=0, timecreated=now - 30 * DAY)
    site.token = token
