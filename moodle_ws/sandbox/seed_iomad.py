"""The IOMAD and companion part of the seeded site: companies, departments, licences,
tracks, schedules and cloud settings (called by seed.generate_site).

Besides the learners, each company gets its managers as IOMAD stores them, rows of
company_users with a managertype (1 company manager, 2 department manager): user 4
`companymanager` manages the first company from its top department, user 5 `deptmanager`
manages a child department of the last one. They are added after the licences, so seats
go to learners only. No IOMAD web-service function returns managertype (the answers of
get_department_users and get_user_companies carry none), so the sandbox keeps it in its
tables and never in an answer."""

import random

from moodle_ws.sandbox.model import (
    Company,
    CompanyUser,
    Department,
    License,
    LicenseAllocation,
    Track,
    User,
)
from moodle_ws.sandbox.names import COMPANY_NAMES, DEPARTMENT_NAMES
from moodle_ws.sandbox.site import Site

DAY = 86400


def build(site: Site, spec, rng: random.Random, now: int) -> None:
    """Fill the site's IOMAD tables and companion data from `rng`."""
    _companies(site, spec, rng)
    _licenses(site, rng, now)
    _tracks(site)
    _managers(site, now)
    _companion(site, spec, rng, now)


def _companies(site: Site, spec, rng: random.Random) -> None:
    depid = 9
    for n in range(spec.companies):
        name, short, code, city, country, region = COMPANY_NAMES[n % len(COMPANY_NAMES)]
        if n >= len(COMPANY_NAMES):
            suffix = n // len(COMPANY_NAMES) + 1
            name, short, code = f"{name} {suffix}", f"{short}{suffix}", f"{code}{suffix}"
        cid = 4 + n
        site.companies[cid] = Company(
            cid,
            name,
            short,
            code,
            city,
            country,
            address=f"{n + 1} Dock Road",
            postcode=f"LS{n + 1} 4AB",
            region=region,
            maxusers=spec.learners + 100,
            maincolor="#004b87",
            timezone="Europe/London" if country == "GB" else "99",
        )
        top = Department(depid, name, short, cid, 0)
        site.departments[depid] = top
        depid += 1
        for dname in DEPARTMENT_NAMES[: 2 + n % 2]:
            site.departments[depid] = Department(depid, dname, dname.lower(), cid, top.id)
            depid += 1
    if not site.companies:
        return
    by_company: dict[int, list[int]] = {}
    for dep in site.departments.values():
        by_company.setdefault(dep.company, []).append(dep.id)
    company_ids = sorted(site.companies)
    for uid in site.learner_ids:
        if rng.random() < spec.no_company_fraction:
            continue
        cid = company_ids[rng.randrange(len(company_ids))]
        deps = by_company[cid]
        site.company_users.append(CompanyUser(uid, cid, deps[rng.randrange(len(deps))]))
        user = site.users[uid]
        user.institution = site.companies[cid].name
        user.department = site.departments[site.company_users[-1].departmentid].name


COMPANY_MANAGER = (4, "companymanager", "Manager-pass1!", "Carla", "Compton")
DEPARTMENT_MANAGER = (5, "deptmanager", "Manager-pass1!", "Dev", "Patel")


def _managers(site: Site, now: int) -> None:
    """A company manager (managertype 1) of the first company, in its top department, and a
    department manager (managertype 2) of a child department of the last company."""
    if not site.companies:
        return
    first, last = min(site.companies), max(site.companies)
    deps = sorted(site.departments.values(), key=lambda d: d.id)
    top = next(d for d in deps if d.company == first and d.parent == 0)
    child = next(d for d in deps if d.company == last and d.parent != 0)
    for (uid, username, password, firstname, lastname), dep, kind in (
        (COMPANY_MANAGER, top, 1),
        (DEPARTMENT_MANAGER, child, 2),
    ):
        site.add_user(
            User(
                uid,
                username,
                password,
                firstname,
                lastname,
                f"{username}@example.com",
                timecreated=now - 200 * DAY,
                firstaccess=now - 199 * DAY,
                lastaccess=now - DAY,
                department=dep.name,
                institution=site.companies[dep.company].name,
            )
        )
        site.company_users.append(CompanyUser(uid, dep.company, dep.id, managertype=kind))


def _licenses(site: Site, rng: random.Random, now: int) -> None:
    main = site.main_course_id
    others = [c for c in sorted(site.courses) if c not in (1, main)][:1]
    lid = 15
    members: dict[int, list[int]] = {}
    for row in site.company_users:
        members.setdefault(row.companyid, []).append(row.userid)
    for cid in sorted(site.companies):
        users = members.get(cid, [])
        start = now - 200 * DAY
        big = License(
            lid,
            f"Safety {2025 + lid % 2}",
            max(len(users) * 3 // 4, 10),
            90,
            start,
            now + 165 * DAY,
            cid,
            [main, *others],
            reference=f"PO-{7000 + lid}",
        )
        full = License(
            lid + 1,
            "Forklift seats",
            3,
            30,
            start,
            now + 60 * DAY,
            cid,
            [main],
            type=1,
            reference=f"PO-{7001 + lid}",
        )
        empty = License(lid + 2, "Pending order", 0, 30, start, now + 300 * DAY, cid, [main])
        expired = License(
            lid + 3, "Legacy 2023", 5, 30, now - 700 * DAY, now - 300 * DAY, cid, [main]
        )
        for lic in (big, full, empty, expired):
            site.licenses[lic.id] = lic
        enrolled = site.enrolments.get(main, {})
        for uid in users[: big.allocation // 2]:
            isusing = 1 if uid in enrolled and rng.random() < 0.7 else 0
            site.allocations.append(LicenseAllocation(big.id, uid, main, start + DAY, isusing))
        for uid in users[-full.allocation :]:
            site.allocations.append(LicenseAllocation(full.id, uid, main, start + 2 * DAY, 1))
        lid += 4


def _tracks(site: Site) -> None:
    licensed = {(a.userid, a.licensecourseid): a.licenseid for a in site.allocations}
    tid = 5000
    for courseid in sorted(site.course_completions):
        for uid, when in sorted(site.course_completions[courseid].items()):
            site.tracks[tid] = Track(tid, uid, courseid, when, licensed.get((uid, courseid), 0))
            tid += 1


def _companion(site: Site, spec, rng: random.Random, now: int) -> None:
    kinds = [
        ("Weekly reminder", "weekly", "email", "not_completed", "reminder_v1"),
        ("Certificates on completion", "daily", "certificate", "completed", "certificate_v1"),
        ("Re-engagement", "custom", "email", "inactive", "reengagement_v1"),
        ("Monthly digest", "monthly", "both", "enrolled", "reminder_v1"),
    ]
    companies = sorted(site.companies) or [0]
    for n in range(spec.schedules):
        name, freq, action, audience, template = kinds[n % len(kinds)]
        site.schedules.append(
            {
                "id": n + 1,
                "name": name,
                "enabled": 0 if n == 3 else 1,
                "companyid": companies[n % len(companies)],
                "courseid": site.main_course_id,
                "frequency": freq,
                "custom_interval": 14 if freq == "custom" else 0,
                "timeofday": 9 * 3600 + 30 * 60 * n,
                "weekday": 1,
                "monthday": 1,
                "action_type": action,
                "cloud_preference": ("auto", "cloud", "local")[n % 3],
                "suppresstarget": 0,
                "suppress_course_completion": 1 if audience != "completed" else 0,
                "audience": audience,
                "inactive_days": 30 if audience == "inactive" else 0,
                "template_id": template,
                "subject": name,
                "timemodified": now - rng.randrange(1, 60) * DAY,
            }
        )
    providers = ("AWS", "CLOUDFLARE", "SYSTEM")
    for i, cid in enumerate(sorted(site.companies)):
        site.cloud_settings.append(
            {
                "companyid": cid,
                "enabled": 1 if i % 3 != 2 else 0,
                "email_provider": providers[i % 3],
                "threshold": 100 * (i + 1),
            }
        )
