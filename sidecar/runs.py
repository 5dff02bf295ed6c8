"""Firing schedules: exactly once per due time, whatever the restarts and the daemons.

A tick asks each active schedule what is due (`schedules.timing.due_now`). Firing first
writes a run row unique on (schedule, due_at): the daemon whose insert succeeds owns the
run, any other gets an IntegrityError and leaves it. Only then are learners and
completion pulled from Moodle (fresh, never from an earlier run), recipients selected,
the route chosen, and the jobs committed under an idempotency key of the run, so a run
re-executed after a crash gives nobody a second message.
"""

import logging
import os
import re
import socket
import uuid
from collections import Counter
from collections.abc import Callable, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from peewee import IntegrityError

from moodle_ws import functions, iomad
from moodle_ws.accounts import Accounts
from moodle_ws.errors import MoodleError, MoodleUnavailable
from schedules.model import ActionType, Audience, Schedule
from schedules.selection import Learner, Selection, label, select_recipients
from schedules.timing import due_now, next_due
from sidecar import csvinput, metrics, routing
from sidecar.coursejobs import create_course_job
from sidecar.db import store
from sidecar.db.models import Certificate, Company, Job, Recipient, ScheduleRecord, ScheduleRun
from sidecar.errors import SidecarError, TemplateError
from sidecar.exclusions import ledger_exclusions, opted_out_of
from sidecar.moodle import PulledCourse, accounts, open_client, pull_course
from sidecar.status import RecipientStatus

log = logging.getLogger(__name__)

RETRY_AFTER = timedelta(minutes=5)  # first retry of a run Moodle could not serve; doubles
MAX_RETRY_GAP = timedelta(hours=1)
# A claim whose owner is gone is taken over at once when it was on this host, after this
# long when it was on another (a run that is still working there must not be doubled).
STALE_CLAIM = timedelta(hours=6)


@dataclass
class RunOutcome:
    schedule: Schedule
    due_at: datetime
    status: str  # done | failed | retry | skipped | dry_run
    recipients: int = 0
    counts: dict = field(default_factory=dict)
    route: routing.Route | None = None
    jobs: list[str] = field(default_factory=list)
    error: str | None = None
    sample: object | None = None  # a RenderedEmail, for --dry-run
    pulled: PulledCourse | None = field(default=None, repr=False)
    selection: Selection | None = field(default=None, repr=False)

    @property
    def summary(self) -> str:
        s = self.schedule
        head = f"schedule {s.source}/{s.id} {s.name!r} due {self.due_at:%Y-%m-%d %H:%M} UTC"
        if self.error:
            return f"{head}: {self.status}: {self.error}"
        route = f"; route {self.route.route}: {self.route.reason}" if self.route else ""
        return f"{head}: {self.status}: {accounting(self.counts)}{route}"


ACCOUNT_REFUSED = "account_refused"
ACCOUNT_HIDDEN = "account_hidden"
SUSPENDED_HIDDEN = "suspended_hidden"
AUTH_HIDDEN = "auth_hidden"
ENROLMENTS_HIDDEN = "enrolments_hidden"

#: What a run could not check, by key: (what an admin reads, what to do about it). A
#: recipient counted here may be mailed where Moodle itself would not mail them.
WARNINGS = {
    ACCOUNT_REFUSED: (
        "account lookup refused by Moodle",
        "their profiles fail Moodle's own checks (country, city, address...): the user ids "
        "are in the log",
    ),
    ACCOUNT_HIDDEN: ("account not visible", "give the token's user moodle/user:viewdetails"),
    SUSPENDED_HIDDEN: (
        "account suspension not visible",
        "give the token's user moodle/user:viewhiddendetails: hiddenuserfields hides it",
    ),
    AUTH_HIDDEN: ("nologin not visible", "give the token's user moodle/user:viewalldetails"),
    ENROLMENTS_HIDDEN: (
        "suspended enrolments not visible",
        "give the token's user moodle/course:enrolreview",
    ),
}


def accounting(counts: dict) -> str:
    """A run's counts as an admin reads them: every learner, recipient or left out by reason.

    "500 learners: 312 recipients (312 emails); left out: completed 150, suspended account
    20". Each recipient gets one email, which carries their certificate when they get one:
    "10 recipients (10 emails, 10 with a certificate)". A run recorded before learners were
    counted shows its recipients.
    """
    recipients = counts.get("recipients")
    if recipients is None or "learners" not in counts:
        return f"{recipients or 0} recipients"
    certificates = counts.get("certificate", 0)
    text = f"{counts['learners']} learners: {recipients} recipients ({_plural(recipients, 'email')}"
    text += f", {certificates} with a certificate)" if certificates else ")"
    left_out = counts.get("left_out") or {}
    text += "; left out: " + (
        ", ".join(f"{label(r)} {n}" for r, n in left_out.items()) if left_out else "nobody"
    )
    withheld = counts.get("withheld") or {}
    if withheld:
        text += "; certificates withheld: " + ", ".join(
            f"{label(r)} {n}" for r, n in withheld.items()
        )
    warnings = counts.get("warnings") or {}
    if warnings:
        text += "; warnings: " + ", ".join(
            f"{WARNINGS[w][0]} {n} ({WARNINGS[w][1]})" if w in WARNINGS else f"{w} {n}"
            for w, n in warnings.items()
        )
    return text


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _warnings(
    sel: Selection, looked: Accounts | None, enrolments_visible: bool = True
) -> dict[str, int]:
    """The run's warnings: recipients whose account or enrolment could not be checked, by why.

    `looked` None: the accounts came from the companion, which sees every one."""
    found: Counter[str] = Counter()
    if not enrolments_visible:
        found[ENROLMENTS_HIDDEN] = sel.total  # any of them may have a suspended enrolment
    for learner in sel.recipients if looked is not None else ():
        account = looked.users.get(learner.userid)
        if learner.userid in looked.refused:
            found[ACCOUNT_REFUSED] += 1
        elif account is None:
            found[ACCOUNT_HIDDEN] += 1  # Moodle leaves out a user the token may not see
        else:
            # Moodle leaves the field out rather than say what it hides
            found[SUSPENDED_HIDDEN] += account.suspended is None
            found[AUTH_HIDDEN] += account.auth is None
    return {w: found[w] for w in WARNINGS if found[w]}


_INCARNATION = uuid.uuid4().hex[:8]


def owner_id() -> str:
    """host:pid:token, one per process: tells it from an earlier one with the same pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{_INCARNATION}"


def aware(naive: datetime) -> datetime:
    return naive.replace(tzinfo=UTC)


def naive(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None)


class Runner:
    """Fires due schedules. `clock` gives naive UTC like the ledger."""

    def __init__(self, rt, *, catch_up: str | None = None,
                 progress: Callable[[float], None] | None = None):  # fmt: skip
        """`progress`: told after each Moodle request (the watchdog's beat, for the daemon's
        tick; sidecar.moodle.open_client)."""
        self.rt = rt
        self.progress = progress
        self.config = rt.config
        self.tz = ZoneInfo(self.config.schedules.timezone)
        self.catch_up = catch_up or self.config.schedules.catch_up
        self.owner = owner_id()
        # A tick may come a whole interval late; "skip" must not skip a run that was on time.
        self.grace = max(
            timedelta(minutes=5), 2 * timedelta(seconds=self.config.schedules.tick_interval)
        )

    # --- the tick ------------------------------------------------------------------------

    def tick(self) -> list[RunOutcome]:
        """Fire what is due now and retry runs Moodle could not serve; never raises."""
        outcomes = []
        now = self.rt.clock()
        for record in self._active():
            try:
                schedule = _schedule(record)
                outcome = self._maybe_fire(record, schedule, now)
            except Exception:  # noqa: BLE001 - one schedule must not stop the others
                log.exception("schedule %s/%d: tick failed", record.source, record.remote_id)
                continue
            if outcome is not None:
                outcomes.append(outcome)
        try:
            outcomes.extend(self._retry_due(now))
        except Exception:  # noqa: BLE001 - tick boundary
            log.exception("schedule retries failed; tried again at the next tick")
        return outcomes

    def _active(self) -> list[ScheduleRecord]:
        from sidecar.sync import sources

        return list(ScheduleRecord.select().where(
            ScheduleRecord.enabled == True, ScheduleRecord.deleted_at.is_null(),  # noqa: E712
            ScheduleRecord.source.in_(sources(self.config)),
        ).order_by(ScheduleRecord.id))  # fmt: skip

    def _maybe_fire(self, record, schedule, now) -> RunOutcome | None:
        last = (ScheduleRun.select(ScheduleRun.due_at)
                .where(ScheduleRun.schedule == record.id, ScheduleRun.manual == False)  # noqa: E712
                .order_by(ScheduleRun.due_at.desc()).first())  # fmt: skip
        # first_seen_at moves forward when a schedule is re-enabled or restored, so nothing
        # it missed while off fires.
        previous = max(last.due_at, record.first_seen_at) if last else None
        due = due_now(
            schedule, aware(previous) if previous else None, aware(now), self.tz,
            self.catch_up, since=aware(record.first_seen_at), grace=self.grace,
        )  # fmt: skip
        if due is None:
            return None
        log.info("schedule %s/%d: %s", record.source, record.remote_id, due.summary)
        run = self._claim(record, naive(due.due_at), now, due.missed, fire=due.fire)
        if run is None:
            return None
        if not due.fire:
            metrics.schedule_run("skipped")
            return RunOutcome(schedule, run.due_at, "skipped")
        return self.execute(record, run)

    def _claim(self, record, due_at, now, missed, *, fire=True, manual=False):
        """The run row for (schedule, due_at), or None when another daemon wrote it first."""
        try:
            with store.atomic():
                run_id = ScheduleRun.insert(
                    schedule=record.id, due_at=due_at, status="claimed" if fire else "skipped",
                    owner=self.owner, missed=missed, claimed_at=now, manual=manual,
                    finished_at=None if fire else now,
                ).execute()  # fmt: skip
        except IntegrityError:
            log.info("schedule %s/%d: run at %s already taken by another daemon",
                     record.source, record.remote_id, due_at)  # fmt: skip
            return None
        return ScheduleRun.get_by_id(run_id)

    def _retry_due(self, now) -> list[RunOutcome]:
        """Runs Moodle could not serve (backing off, until the next due time), and runs a
        daemon that is gone left claimed."""
        from sidecar.delivery import owner_alive

        out = []
        host = self.owner.split(":", 1)[0] + ":"
        candidates = ScheduleRun.select().where(ScheduleRun.status.in_(("retry", "claimed")))
        for run in candidates:
            if run.status == "claimed":
                mine = (run.owner or "").startswith(host)
                if run.owner == self.owner or (mine and owner_alive(run.owner)):
                    continue
                if not mine and run.claimed_at > now - STALE_CLAIM:
                    continue
            else:
                tries = (run.counts or {}).get("tries", 1)
                gap = min(RETRY_AFTER * 2 ** (tries - 1), MAX_RETRY_GAP)
                if run.finished_at is None or run.finished_at > now - gap:
                    continue
            try:
                outcome = self._take_over(run, now)
            except Exception:  # noqa: BLE001 - one run must not stop the others
                log.exception("schedule run %d: retry failed", run.id)
                continue
            if outcome is not None:
                out.append(outcome)
        return out

    def _take_over(self, run: ScheduleRun, now) -> RunOutcome | None:
        record = ScheduleRecord.get_or_none(ScheduleRecord.id == run.schedule_id)
        if record is None or not record.enabled or record.deleted_at is not None:
            self._close(run, "failed", "the schedule was disabled or deleted before the retry")
            return None
        schedule = _schedule(record)
        later = ScheduleRun.select().where(
            ScheduleRun.schedule == record.id, ScheduleRun.due_at > run.due_at,
            ScheduleRun.status == "done",
        ).exists()  # fmt: skip
        if later:
            self._close(run, "superseded", "a later run of the schedule has been done")
            return None
        if not run.manual and aware(now) >= next_due(schedule, aware(run.due_at), self.tz):
            self._close(run, "failed", f"{run.error or 'not done'}; the next due time has come")
            return None
        taken = ScheduleRun.update(status="claimed", owner=self.owner, claimed_at=now).where(
            ScheduleRun.id == run.id, ScheduleRun.status == run.status,
            ScheduleRun.owner == run.owner, ScheduleRun.claimed_at == run.claimed_at,
        ).execute()  # fmt: skip
        if not taken:
            return None  # another daemon took it first
        return self.execute(record, ScheduleRun.get_by_id(run.id))

    def _close(self, run: ScheduleRun, status: str, why: str) -> None:
        log.warning("schedule run %d (due %s): %s: %s", run.id, run.due_at, status, why)
        closed = (
            ScheduleRun.update(status=status, error=why, finished_at=self.rt.clock())
            .where(ScheduleRun.id == run.id, ScheduleRun.status == run.status)
            .execute()
        )
        if closed:
            metrics.schedule_run(status)

    # --- one run ---------------------------------------------------------------------------

    def fire_now(self, record: ScheduleRecord, *, reissue: bool = False) -> RunOutcome:
        """`schedules run ID`: a run at this very second, recorded like any other."""
        now = self.rt.clock().replace(microsecond=0)
        run = self._claim(record, now, now, 0, manual=True)
        if run is None:
            raise SidecarError(f"schedule {record.remote_id}: a run at {now} exists already")
        return self.execute(record, run, reissue=reissue)

    def execute(self, record: ScheduleRecord, run: ScheduleRun, *, reissue=False) -> RunOutcome:
        """Select, route and commit the jobs of a claimed run, then record the outcome."""
        schedule = _schedule(record)
        try:
            outcome = self.prepare(schedule, run.due_at, reissue=reissue)
            outcome = self.commit(schedule, outcome, key=run_key(schedule, run.due_at),
                                  schedule_id=schedule.id, run_id=run.id)  # fmt: skip
        except MoodleUnavailable as exc:
            # A manual run is not retried behind the admin's back: they see it failed.
            tries = (run.counts or {}).get("tries", 0) + 1
            status = "failed" if run.manual else "retry"
            outcome = RunOutcome(schedule, run.due_at, status, error=str(exc),
                                 counts={"tries": tries})  # fmt: skip
        except (MoodleError, SidecarError, TemplateError) as exc:
            outcome = RunOutcome(schedule, run.due_at, "failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - recorded, never left claimed
            log.exception("schedule %s/%d: run %d failed", schedule.source, schedule.id, run.id)
            outcome = RunOutcome(schedule, run.due_at, "failed",
                                 error=f"{type(exc).__name__}: {exc}")  # fmt: skip
        if self._record(run, outcome):
            metrics.schedule_run(outcome.status)
        level = logging.ERROR if outcome.status == "failed" else logging.INFO
        log.log(level, "%s", outcome.summary)
        return outcome

    def prepare(
        self,
        schedule: Schedule,
        due_at: datetime,
        *,
        reissue: bool = False,
        only: Set[int] | None = None,
    ) -> RunOutcome:
        """Everything up to the jobs, sending nothing: what `--dry-run` shows.

        The recipients are the ones the run sends to (`commit` takes this very selection);
        every other learner of the course is counted by reason. `only` restricts the
        learners to those user ids (a tool given a list of users)."""
        config, m = self.config, self.config.moodle
        issued = set() if reissue else _issued(schedule.courseid)
        now_epoch = int(aware(self.rt.clock()).timestamp())
        client = open_client(config, self.progress)
        try:
            site = functions.site_info(client)
            pulled = pull_course(
                client, schedule.courseid, site=site, prefix=m.companion_prefix,
                page_size=m.page_size, activities=schedule.suppresstarget > 0,
                course_completion=_needs_course_completion(schedule),
            )  # fmt: skip
            members = _company_members(client, schedule)
            learners = _learners(pulled)
            if only is not None:
                learners = [lr for lr in learners if lr.userid in only]
            # By reference: the address rule is the job ledger's, whatever it becomes.
            check_email = csvinput.validate_email
            excluded = ledger_exclusions(schedule, learners, check_email)
            unsubscribed = opted_out_of(_job_type(schedule), learners)

            def select(known_accounts=None) -> Selection:
                return select_recipients(
                    schedule, learners, pulled.completions, now_epoch, issued=issued,
                    reissue=reissue, members=members, check_email=check_email,
                    excluded=excluded, accounts=known_accounts, unsubscribed=unsubscribed,
                )  # fmt: skip

            # The account is the last reason: only the first selection's recipients are asked,
            # unless the companion's completion answer already said whom Moodle never mails.
            first = select()
            looked: Accounts | None = None
            known = pulled.completions.unmailable
            if known is None:
                looked = accounts(client, [lr.userid for lr in first.recipients])
                known = looked.users
            sel = select(known)
        finally:
            client.close()
        route = self._route(schedule, sel)
        counts = {
            "learners": sel.learners, "recipients": sel.total, "left_out": dict(sel.left_out),
            "withheld": dict(sel.withheld), "audience": sel.audience_size,
            "email": len(sel.email), "certificate": len(sel.certificate),
            "moodle_requests": client.tally.count,  # every request of the run, retries too
            "completion_method": pulled.completions.method,
            "certificates_rendered": route.certificates,
        }  # fmt: skip
        warnings = _warnings(sel, looked, pulled.enrolments_visible)
        if warnings:
            counts["warnings"] = warnings
        sample = self._sample(schedule, pulled, sel, m.url)
        return RunOutcome(schedule, due_at, "dry_run", sel.total, counts, route, sample=sample,
                          pulled=pulled, selection=sel)  # fmt: skip

    def _route(self, schedule: Schedule, sel: Selection) -> routing.Route:
        o = self.config.offload
        company = _company_override(self.config, schedule.companyid)
        route = routing.choose_route(
            preference=schedule.cloud_preference.value, recipients=sel.total,
            offload_enabled=o.enabled, provider=o.provider, threshold=o.threshold,
            certificate_mode=o.certificate_mode, company=company,
        )  # fmt: skip
        problem = self.rt.cloud_problem(route.route) if route.is_cloud else None
        if problem:
            fallen = routing.fall_back(route, problem, o.fallback)
            if fallen is None:
                raise SidecarError(f"{route.reason}; {problem} and offload.fallback = fail")
            route = fallen
        return route

    def commit(
        self,
        schedule: Schedule,
        prepared: RunOutcome,
        *,
        key: str,
        schedule_id: int | None = None,
        run_id: int | None = None,
    ) -> RunOutcome:
        """Commit the jobs of a prepared outcome under idempotency key `key`: a user that
        key already holds is recorded as skipped_duplicate, never sent again. A run passes
        its schedule and run ids; a tool (an ad-hoc schedule) passes none."""
        pulled, sel, route = prepared.pulled, prepared.selection, prepared.route
        cfg = self.config
        common = dict(
            wwwroot=cfg.moodle.url, sender=cfg.sender_for(schedule.companyid)[0],
            batch_size=cfg.offload.job_batch_size, now=self.rt.clock(), key=key,
            route=route.route, route_reason=route.reason, schedule_id=schedule_id,
            run_id=run_id, tenant_id=schedule.companyid or None,
        )  # fmt: skip
        if schedule.audience is Audience.INACTIVE:  # the re-engagement template says it
            common["extra"] = {"inactive_days": schedule.inactive_days}
        certified = {le.userid for le in sel.certificate}
        jobs = []
        if certified:
            # certificate_mode = local on a cloud route: the certificates, and the emails
            # that carry them, stay here; the other emails still go to the cloud
            here = route.is_cloud and route.certificates == "local"
            reason = f"{route.reason}; certificate_mode = local: certificates are rendered here"
            jobs.append(create_course_job(
                pulled, certified, type="certificate", certificate=True,
                template_id=self._template(schedule, certificate=True),
                **{**common, **({"route": "local", "route_reason": reason} if here else {})},
            ))  # fmt: skip
        mail_only = {le.userid for le in sel.email} - certified
        if mail_only:
            jobs.append(create_course_job(
                pulled, mail_only, type=_job_type(schedule),
                template_id=self._template(schedule, certificate=False), **common,
            ))  # fmt: skip
        job_ids = [j.created.job_id for j in jobs]
        prepared.status, prepared.jobs = "done", job_ids
        prepared.counts["jobs"] = job_ids
        return prepared

    def _record(self, run: ScheduleRun, o: RunOutcome) -> bool:
        """Record the outcome, only while this daemon still holds the claim (True: it did)."""
        with store.atomic():
            kept = ScheduleRun.update(
                status=o.status, finished_at=self.rt.clock(), recipients=o.recipients,
                counts=o.counts, route=o.route.route if o.route else None,
                route_reason=o.route.reason if o.route else "", error=o.error,
            ).where(ScheduleRun.id == run.id, ScheduleRun.owner == self.owner,
                    ScheduleRun.status == "claimed").execute()  # fmt: skip
        if not kept:
            log.warning("schedule run %d: taken over meanwhile; its outcome stays", run.id)
        return bool(kept)

    # --- templates -------------------------------------------------------------------------

    def _template(self, schedule: Schedule, *, certificate: bool) -> str:
        """The schedule's template when this daemon has it (`reminder_v1` → `reminder`),
        else the shipped one for the kind of message."""
        for candidate in (schedule.template_id, re.sub(r"_v\d+$", "", schedule.template_id)):
            if candidate and self._has_template(candidate) and candidate != "certificate":
                return candidate
        if certificate:
            return "completion"
        return "reengagement" if schedule.audience is Audience.INACTIVE else "reminder"

    def _has_template(self, template_id: str) -> bool:
        try:
            self.rt.renderer.variables(template_id)
        except TemplateError:
            return False
        return True

    def _sample(self, schedule, pulled, sel: Selection, wwwroot: str):
        from sidecar.moodle import course_vars
        from sidecar.render import learner_vars

        who = (sel.certificate or sel.email or (None,))[0]
        if who is None:
            return None
        cert = who in sel.certificate
        ctx = {**learner_vars(who.userid, who.email or "", who.firstname, who.lastname),
               "course": course_vars(pulled.course, wwwroot), "company": {"name": ""},
               "today": self.rt.clock().date().isoformat(),
               "inactive_days": schedule.inactive_days,
               "certificate_url": "https://example.invalid/certificates/SAMPLE"}  # fmt: skip
        return self.rt.renderer.preview(self._template(schedule, certificate=cert), ctx)


def run_key(schedule: Schedule, due_at: datetime) -> str:
    """The idempotency key of a schedule's run at `due_at`."""
    return f"schedule:{schedule.source}:{schedule.id}:{due_at:%Y%m%dT%H%M%S}"


def dry_run_lines(outcome: RunOutcome) -> list[str]:
    """What a dry run shows under its heading, the same for a schedule and a tool: the
    accounting, the route and why, Moodle's requests, and one rendered sample."""
    c = outcome.counts
    lines = [
        f"  {accounting(c)}",
        f"  route: {outcome.route.route}: {outcome.route.reason}",
        f"  Moodle: {c['moodle_requests']} requests ({c['completion_method']})",
    ]
    if outcome.sample is not None:
        lines.append(f"--- sample: {outcome.sample.subject}\n{outcome.sample.text}")
    return lines


def _schedule(record: ScheduleRecord) -> Schedule:
    return Schedule.from_remote(record.data, record.source)


def _learners(pulled: PulledCourse) -> list[Learner]:
    """Every participant of the pulled course; a suspended enrolment is known by its id."""
    active = [
        Learner(
            u.id,
            u.email,
            u.firstname or "",
            u.lastname or "",
            u.lastaccess or 0,
            u.lastcourseaccess,
        )
        for u in pulled.learners
    ]
    suspended = [
        Learner(uid, None, "", "", active_enrolment=False) for uid in pulled.suspended_enrolments
    ]
    return active + suspended


def _needs_course_completion(schedule: Schedule) -> bool:
    """Whether the run depends on who completed the course (else Moodle is not asked)."""
    return (
        schedule.audience in (Audience.COMPLETED, Audience.NOT_COMPLETED)
        or schedule.suppress_course_completion
        or schedule.action_type is not ActionType.EMAIL
    )


def _job_type(schedule: Schedule) -> str:
    if schedule.action_type is ActionType.CERTIFICATE:
        return "certificate"
    return "send_reengagement" if schedule.audience is Audience.INACTIVE else "send_reminder"


def _issued(courseid: int) -> set[int]:
    """Learners who hold a certificate of the course, or have one on its way.

    A certificate job not yet delivered counts: the next run must not queue a second one.
    Only a job that failed for good (or was cancelled) frees the learner again.
    """
    held = {r.userid for r in Certificate.select(Certificate.userid).where(
        Certificate.courseid == courseid, Certificate.revoked_at.is_null())}  # fmt: skip
    gone = (RecipientStatus.PERMANENTLY_FAILED, RecipientStatus.CANCELLED,
            RecipientStatus.FAILED, RecipientStatus.SKIPPED_DUPLICATE)  # fmt: skip
    cert_jobs = [j.id for j in Job.select(Job.id, Job.actions).where(Job.courseid == courseid)
                 if (j.actions or {}).get("certificate")]  # fmt: skip
    on_the_way = (
        Recipient.select(Recipient.userid).where(
            Recipient.job.in_(cert_jobs), Recipient.status.not_in(gone)
        )
        if cert_jobs
        else []
    )
    return held | {r.userid for r in on_the_way}


def _company_members(client, schedule: Schedule) -> set[int] | None:
    """The users of the schedule's IOMAD company, or None for a schedule of the whole site.

    A company schedule never falls back to the whole course: if the company's users
    cannot be read, the run fails rather than mail another company's learners.
    """
    if not schedule.companyid:
        return None
    try:
        return {u.id for u in iomad.company_users(client, schedule.companyid)}
    except MoodleUnavailable:
        raise
    except MoodleError as exc:
        raise SidecarError(
            f"company {schedule.companyid}: its users cannot be read: {exc}"
        ) from None


def _company_override(config, companyid: int) -> routing.CompanyOverride | None:
    if not companyid:
        return None
    for c in config.companies:
        if c.id == companyid:
            return routing.CompanyOverride(c.id, c.enabled, c.provider, c.threshold)
    row = Company.get_or_none(Company.id == companyid)
    if row is None:
        return None
    return routing.CompanyOverride(row.id, row.enabled, row.provider, row.threshold)
