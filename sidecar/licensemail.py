"""`send license`: IOMAD licence-allocation emails, previewed, confirmed, once per allocation.

IOMAD's web services list no user's allocations, so they come from the companion function
`{prefix}_get_license_allocations` (IOMAD's companylicense_users rows since a time); the
licence itself (name, validity, courses) from IOMAD's `get_license_from_id`, the company's
name from `get_companies`, the learner's address and state from `core_user_get_users_by_field`.

One email is one user's seat(s) on one licence allocated at one time. Its idempotency key is
the allocation's own, `license:{licenseid}:{userid}:{issuedate}`, never the window's, so an
allocation is mailed once whatever `--since` says or how often the tool runs. Each company's
mail is a job of its own (tenant = company): the company's template
(`templates.dir/companies/{id}/license.html`) and sender (`[[companies]] from`) apply, and
its route is chosen by threshold and company like a schedule's.
"""

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from peewee import IntegrityError

from moodle_ws import companion, functions, iomad
from moodle_ws.client import MoodleClient
from moodle_ws.errors import RecordNotFound
from moodle_ws.types import License, LicenseAllocation, User
from sidecar import jobs, moodle, routing, runs
from sidecar.config import _seconds
from sidecar.csvinput import validate_email
from sidecar.db import store
from sidecar.errors import Aborted, Conflict, MoodleLacks, SidecarError
from sidecar.render import RenderedEmail, learner_vars
from sidecar.runtime import Runtime

log = logging.getLogger(__name__)

JOB_TYPE = "send_license"
TEMPLATE_ID = "license"
IOMAD_NEEDED = (
    "block_iomad_company_admin_get_license_from_id",
    "block_iomad_company_admin_get_companies",
)
USERS_FN = "core_user_get_users_by_field"
ALREADY_SENT = "already sent (an earlier run)"


def parse_since(text: str, now: datetime) -> datetime:
    """`24h`, `2d`, `90m` before `now`, or a date / date-time (`2025-11-18`,
    `2025-11-18T09:00`, UTC unless it says otherwise). Raises ValueError."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", text):
        when = datetime.fromisoformat(text)
        if when.tzinfo is not None:
            when = when.astimezone(UTC).replace(tzinfo=None)
        return when
    seconds = _seconds(text)
    if seconds <= 0:
        raise ValueError("give a positive duration such as 24h, or a date such as 2025-11-18")
    return now - timedelta(seconds=seconds)


@dataclass(frozen=True)
class Options:
    since: datetime  # naive UTC, like the ledger
    companyid: int = 0
    licenseid: int = 0


@dataclass(frozen=True)
class Allocation:
    """One email: a user's seat(s) on one licence, allocated at one time."""

    licenseid: int
    userid: int
    companyid: int
    issuedate: int
    courseids: tuple[int, ...]

    @property
    def key(self) -> str:
        return f"license:{self.licenseid}:{self.userid}:{self.issuedate}"


@dataclass
class CompanyPlan:
    companyid: int
    name: str
    sender: str
    sender_from: str  # where the sender comes from, for the preview
    template: str  # the template file the company's mail uses
    route: routing.Route
    # each round is one job: a user allocated twice in the window is in two rounds
    rounds: list[list[jobs.RecipientIn]] = field(default_factory=list)

    @property
    def recipients(self) -> int:
        return sum(len(r) for r in self.rounds)

    def by_license(self) -> list[tuple[int, str, int]]:
        """(licence id, name, emails) of the plan, by licence id."""
        seen: Counter = Counter()
        names: dict[int, str] = {}
        for r in (r for rnd in self.rounds for r in rnd):
            lic = r.vars["license"]
            seen[lic["id"]] += 1
            names[lic["id"]] = lic["name"]
        return [(lid, names[lid], seen[lid]) for lid in sorted(seen)]


@dataclass
class LicensePreview:
    options: Options
    found: int  # allocations (emails) Moodle listed in the window
    plans: list[CompanyPlan]
    excluded: Counter  # reason -> emails not sent
    sample: RenderedEmail | None = None
    sample_company: int | None = None

    @property
    def to_send(self) -> int:
        return sum(p.recipients for p in self.plans)


def check_functions(client: MoodleClient, prefix: str) -> None:
    """Raise MoodleLacks naming every function `send license` needs that the token's
    service lacks, and what to add."""
    site = functions.site_info(client)
    missing = []
    name = f"{prefix}_get_license_allocations"
    if not site.has(name):
        missing.append(
            f"{name} (the ManiReports companion plugin's: install or upgrade it, "
            "then add the function to the service)"
        )
    missing += [
        f"{fn} (IOMAD's block_iomad_company_admin)" for fn in IOMAD_NEEDED if not site.has(fn)
    ]
    if not site.has(USERS_FN):
        missing.append(f"{USERS_FN} (core)")
    if missing:
        raise MoodleLacks(
            "send license: Moodle lacks " + "; ".join(missing)
            + f": add them to the token's external service ({moodle.SERVICES_PAGE})"
        )  # fmt: skip


def group(rows: list[LicenseAllocation]) -> list[Allocation]:
    """The emails of IOMAD's rows (one a course): a user's rows of one licence allocated
    at the same time are one email listing their courses."""
    seen: dict[tuple[int, int, int], list[LicenseAllocation]] = {}
    for row in rows:
        seen.setdefault((row.licenseid, row.userid, row.issuedate), []).append(row)
    return [
        Allocation(lid, uid, found[0].companyid, when,
                   tuple(sorted({r.licensecourseid for r in found})))
        for (lid, uid, when), found in seen.items()
    ]  # fmt: skip


def preview(rt: Runtime, options: Options) -> LicensePreview:
    """Read the allocations and everything their emails say, choose each company's route,
    render one sample. Nothing is written. Raises SidecarError, MoodleError, TemplateError."""
    config = rt.config
    client = moodle.open_client(config)
    try:
        return _preview(rt, client, options)
    finally:
        client.close()


def _preview(rt: Runtime, client: MoodleClient, options: Options) -> LicensePreview:
    config = rt.config
    prefix = config.moodle.companion_prefix
    check_functions(client, prefix)
    since = int(options.since.replace(tzinfo=UTC).timestamp())
    rows = companion.get_license_allocations(
        client, since, companyid=options.companyid, licenseid=options.licenseid, prefix=prefix
    )
    allocations = group(rows)
    excluded: Counter = Counter()
    licenses: dict[int, License | None] = {}
    for lid in sorted({a.licenseid for a in allocations}):
        try:
            licenses[lid] = iomad.license_detail(client, lid)
        except RecordNotFound:
            licenses[lid] = None  # deleted since it was allocated
    names = {}
    for cid in sorted({a.companyid for a in allocations}):
        found = iomad.companies(client, id=cid)
        names[cid] = found[0].name if found else ""
    accounts = moodle.accounts(client, {a.userid for a in allocations}).users
    taken = store.taken_keys([(a.key, a.userid) for a in allocations])

    tz = ZoneInfo(config.schedules.timezone)
    wwwroot = config.moodle.url.rstrip("/")
    by_company: dict[int, list[tuple[Allocation, jobs.RecipientIn]]] = {}
    for a in allocations:
        lic, user = licenses[a.licenseid], accounts.get(a.userid)
        why = _why_not(a, lic, user, taken)
        if why:
            excluded[why] += 1
            continue
        r = jobs.RecipientIn(
            userid=a.userid, email=validate_email(user.email or ""),
            firstname=user.firstname or "", lastname=user.lastname or "",
            vars=email_vars(a, lic, names.get(a.companyid, ""), wwwroot, tz), send_key=a.key,
        )  # fmt: skip
        by_company.setdefault(a.companyid, []).append((a, r))

    held = jobs.held_back(JOB_TYPE, False, [r for found in by_company.values() for _, r in found])
    plans = []
    for cid in sorted(by_company):
        kept = []
        for _, r in by_company[cid]:
            if r.userid in held:
                excluded["suppressed address" if held[r.userid].startswith("suppressed") else
                         held[r.userid]] += 1  # fmt: skip
            else:
                kept.append(r)
        if kept:
            plans.append(_plan(rt, cid, names.get(cid, ""), kept))
    pv = LicensePreview(options, len(allocations), plans, excluded)
    if plans:
        first = plans[0].rounds[0][0]
        ctx = {**learner_vars(first.userid, first.email, first.firstname, first.lastname)}
        ctx.update(first.vars)
        ctx.update(today=rt.clock().date().isoformat(), unsubscribe_url="")
        pv.sample = rt.renderer.preview(TEMPLATE_ID, ctx, plans[0].companyid)
        pv.sample_company = plans[0].companyid
    log.info(
        "send license since %s: %d allocations, %d to mail in %d companies, %d not mailed",
        options.since.isoformat(), len(allocations), pv.to_send, len(plans),
        sum(excluded.values()),
    )  # fmt: skip
    return pv


def _why_not(a: Allocation, lic: License | None, user: User | None, taken) -> str | None:
    if (a.key, a.userid) in taken:
        return ALREADY_SENT
    if lic is None:
        return "licence deleted in IOMAD"
    if user is None:
        return "account not found (deleted, or hidden from the token's user)"
    if user.suspended:
        return "suspended account"
    if user.auth == "nologin":
        return "nologin account"
    if not (user.email or "").strip():
        return "no email address"
    try:
        validate_email(user.email)
    except ValueError:
        return "invalid address"
    return None


def _date(ts: int | None, tz: ZoneInfo) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, tz).strftime("%d %B %Y").lstrip("0")


def email_vars(
    a: Allocation, lic: License, company: str, wwwroot: str, tz: ZoneInfo
) -> dict[str, object]:
    """The template variables of one allocation's email (stored with its recipient)."""
    titles = dict(lic.courses)
    courses = [
        {"id": cid, "fullname": titles.get(cid, f"course {cid}"), "shortname": "",
         "url": f"{wwwroot}/course/view.php?id={cid}"}
        for cid in a.courseids
    ]  # fmt: skip
    return {
        "company": {"id": a.companyid, "name": company},
        "license": {
            "id": lic.id,
            "name": lic.name,
            "validlength": lic.validlength,
            "startdate": _date(lic.startdate, tz),
            "expirydate": _date(lic.expirydate, tz),
        },  # fmt: skip
        "courses": courses,
        "course": courses[0],
        "issued_date": _date(a.issuedate, tz),
    }


def _plan(rt: Runtime, cid: int, name: str, recipients: list[jobs.RecipientIn]) -> CompanyPlan:
    config = rt.config
    sender, sender_from = config.sender_for(cid)
    rounds: list[list[jobs.RecipientIn]] = []
    count: Counter = Counter()
    for r in recipients:
        n = count[r.userid]
        count[r.userid] += 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(r)
    o = config.offload
    route = routing.choose_route(
        preference="auto", recipients=len(recipients), offload_enabled=o.enabled,
        provider=o.provider, threshold=o.threshold, certificate_mode=o.certificate_mode,
        company=runs._company_override(config, cid),
    )  # fmt: skip
    problem = rt.cloud_problem(route.route) if route.is_cloud else None
    if problem:
        fallen = routing.fall_back(route, problem, o.fallback)
        if fallen is None:
            raise SidecarError(f"{route.reason}; {problem} and offload.fallback = fail")
        route = fallen
    template = rt.renderer.for_company(TEMPLATE_ID, cid)
    return CompanyPlan(cid, name, sender, sender_from, template, route, rounds)


def commit(rt: Runtime, pv: LicensePreview) -> list[tuple[CompanyPlan, jobs.Created]]:
    """One job per company (and per round), each recipient under its allocation's key: an
    allocation another run committed meanwhile is recorded skipped_duplicate. Raises
    Conflict when a concurrent run keeps taking the same keys (what was committed stays)."""
    if not pv.plans:
        raise Aborted("nothing to send")
    out = []
    since = pv.options.since.strftime("%Y-%m-%dT%H:%M")
    for plan in pv.plans:
        for recipients in plan.rounds:
            spec = jobs.JobSpec(
                type=JOB_TYPE, template_id=TEMPLATE_ID, source=f"license:since {since}",
                route=plan.route.route, route_reason=plan.route.reason,
                tenant_id=plan.companyid, sender=plan.sender,
            )  # fmt: skip
            out.append((plan, _create(rt, spec, recipients)))
    return out


def _create(rt: Runtime, spec: jobs.JobSpec, recipients: list[jobs.RecipientIn]):
    # A run committing the same allocations at the same moment makes the key insert fail
    # and the whole job roll back; the second try sees its keys and skips those users.
    for attempt in range(3):
        try:
            return jobs.create_job(
                spec, recipients, batch_size=rt.config.offload.job_batch_size, now=rt.clock()
            )
        except IntegrityError:
            log.warning("company %s: another run took some of these allocations meanwhile: "
                        "trying again (%d)", spec.tenant_id, attempt + 1)  # fmt: skip
    raise Conflict(
        f"company {spec.tenant_id}: another run keeps committing the same allocations: "
        "run `send license` again when it has finished (nobody is mailed twice)"
    )
