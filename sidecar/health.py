"""The state of each moving part, for the dashboard's overview and `/api/v1/health`.

`Health(config, db).parts()` returns one `Part` per moving part: the database, Moodle
(reachable, and the last schedule sync), each configured provider (the AWS job queue and
its DLQ, the SES quota; Cloudflare; the local SMTP server or mail folder) and the jobs
that stopped making progress. docs/health.md describes each part and its states.

Every check runs in a thread of its own with a deadline (`[dashboard] health_timeout`),
so a Moodle or SMTP server that hangs makes its part "fail: timed out after Ns" instead
of holding up the page; a part's result is kept `[dashboard] health_interval` seconds,
so a dashboard polled every second does not contact Moodle, AWS or the SMTP server every
second. Nothing of a token, password or secret reaches a summary or a detail: every
string passes through `logsetup.redact` and the config's own secrets are replaced.
"""

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from peewee import Database, fn

from sidecar.config import Config
from sidecar.logsetup import redact
from sidecar.runtime import utcnow

log = logging.getLogger(__name__)

OK, WARN, FAIL, OFF = "ok", "warn", "fail", "off"
#: the order of gravity: the overall state is the worst part's
SEVERITY = {OFF: 0, OK: 1, WARN: 2, FAIL: 3}
#: above this share of SES's 24-hour quota the part warns
SES_WARN_SHARE = 0.8
#: a source's last good sync older than this many sync intervals warns
SYNC_STALE_INTERVALS = 3
#: stuck jobs named in the detail at most
STUCK_LISTED = 10


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat(timespec="seconds") + "Z"


@dataclass(frozen=True)
class Part:
    """One moving part's state: `ok`, `warn`, `fail` or `off` (not configured, not used)."""

    name: str
    state: str
    summary: str  # one line for a person
    detail: dict[str, Any] = field(default_factory=dict)  # figures, for the API and charts
    checked_at: datetime | None = None  # naive UTC, when the check ran

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "summary": self.summary,
            "detail": self.detail,
            "checked_at": _iso(self.checked_at),
        }


def overall(parts: list[Part]) -> str:
    """The worst state among `parts` (`off` parts count as nothing wrong)."""
    worst = max((SEVERITY[p.state] for p in parts), default=SEVERITY[OK])
    return OK if worst <= SEVERITY[OK] else next(s for s, v in SEVERITY.items() if v == worst)


class _Slot:
    """One part's cache: its last result, when it came, and the check under way if any."""

    def __init__(self) -> None:
        self.part: Part | None = None
        self.at: float | None = None  # self.monotonic() when `part` came
        self.thread: threading.Thread | None = None
        self.started = 0.0  # time.monotonic() when `thread` started
        self.box: dict[str, Part] = {}
        self.timed_out = -1.0  # `started` of the check `part` says timed out


class Health:
    """Collects the parts; thread safe, one instance per daemon (it caches)."""

    def __init__(
        self,
        config: Config,
        db: Database | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        interval: float | None = None,
        timeout: float | None = None,
    ):
        self.config = config
        self.db = db
        self.clock = clock
        self.monotonic = monotonic
        dash = config.dashboard
        self.interval = float(dash.health_interval if interval is None else interval)
        self.timeout = float(dash.health_timeout if timeout is None else timeout)
        self.stuck_after = timedelta(seconds=dash.stuck_after)
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._secrets = _secrets_of(config)

    # --- the public face ---------------------------------------------------------------------

    def checks(self) -> list[tuple[str, Callable[[], Part]]]:
        """(name, check) of every part of this configuration, in display order."""
        out: list[tuple[str, Callable[[], Part]]] = [
            ("database", self.check_database),
            ("moodle", self.check_moodle),
        ]
        if self.config.providers.aws is not None:
            out += [("aws queue", self.check_aws_queue), ("aws dlq", self.check_aws_dlq),
                    ("ses quota", self.check_ses_quota)]  # fmt: skip
        if self.config.providers.cloudflare is not None:
            out.append(("cloudflare", self.check_cloudflare))
        if self.config.providers.local.maildir is not None:
            out.append(("mail folder", self.check_maildir))
        else:
            out.append(("smtp", self.check_smtp))
        out.append(("stuck jobs", self.check_stuck_jobs))
        return out

    def parts(self, *, fresh: bool = False) -> list[Part]:
        """Every part, in display order.

        A part checked less than `interval` ago comes from the cache. An older one is
        checked again in the background and its last result returned meanwhile (the next
        call shows the new one), so a poll never waits on Moodle, AWS or SMTP. A part
        never checked yet, or every part with `fresh`, is waited for, at most `timeout`
        (the checks run in parallel). A check still running `timeout` after it started
        makes its part "fail: timed out after Ns" until it ends.
        """
        checks = self.checks()
        waits: list[_Slot] = []
        with self._lock:
            for name, check in checks:
                slot = self._slots.setdefault(name, _Slot())
                self._harvest(name, slot)
                stale = slot.at is None or self.monotonic() - slot.at >= self.interval
                if slot.thread is None and (stale or fresh):
                    slot.box = {}
                    slot.started = time.monotonic()
                    slot.thread = threading.Thread(
                        target=self._run, args=(name, check, slot.box), daemon=True,
                        name=f"health-{name}",
                    )  # fmt: skip
                    slot.thread.start()
                if slot.thread is not None and (slot.part is None or fresh):
                    waits.append(slot)
        for slot in waits:
            thread = slot.thread
            if thread is not None:
                thread.join(max(slot.started + self.timeout - time.monotonic(), 0))
        with self._lock:
            out = []
            for name, _ in checks:
                slot = self._slots[name]
                self._harvest(name, slot, timed_out=slot in waits)
                out.append(slot.part)
            return out

    def as_json(self, *, fresh: bool = False) -> dict[str, Any]:
        """`{"state": worst, "parts": [part...]}`, the shape of `/api/v1/health`."""
        parts = self.parts(fresh=fresh)
        return {"state": overall(parts), "parts": [p.as_dict() for p in parts]}

    # --- running one check -------------------------------------------------------------------

    def _harvest(self, name: str, slot: _Slot, *, timed_out: bool = False) -> None:
        """Take a finished check's result; mark a check past its deadline as timed out
        (`timed_out`: the caller waited the whole timeout for it). Under the lock."""
        if slot.thread is None:
            return
        if "part" in slot.box:
            slot.part, slot.at, slot.thread = slot.box["part"], self.monotonic(), None
            return
        late = time.monotonic() - slot.started >= self.timeout
        if (timed_out or late) and slot.timed_out != slot.started:
            slot.part = Part(name, FAIL, f"timed out after {self.timeout:g}s",
                             {"timeout_seconds": self.timeout}, self.clock())  # fmt: skip
            slot.at, slot.timed_out = self.monotonic(), slot.started

    def _run(self, name: str, check: Callable[[], Part], box: dict) -> None:
        try:
            part = check()
        except Exception as exc:  # noqa: BLE001 - a check reports, never raises
            log.debug("health check %s raised", name, exc_info=True)
            part = Part(name, FAIL, f"{type(exc).__name__}: {exc}", {}, self.clock())
        box["part"] = self._clean(part)

    def _clean(self, part: Part) -> Part:
        return replace(part, summary=self._redact(part.summary), detail=self._scrub(part.detail))

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redact(text)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v) for v in value]
        return value

    def _part(self, name: str, state: str, summary: str, **detail: Any) -> Part:
        return Part(name, state, summary, detail, self.clock())

    def _database(self) -> Database:
        with self._db_lock:  # checks run in parallel threads: open it once
            if self.db is None:
                from sidecar.db.connect import open_database

                self.db = open_database(self.config.database.url)
            return self.db

    # --- the checks --------------------------------------------------------------------------

    def check_database(self) -> Part:
        from sidecar.db import migrations

        name = "database"
        db = self._database()
        kind = type(db).__name__.removesuffix("Database").lower()
        try:
            with _connected(db):
                started = time.monotonic()
                db.execute_sql("SELECT 1").fetchall()
                latency = round((time.monotonic() - started) * 1000, 1)
                version = migrations.current_version(db)
        except Exception as exc:  # noqa: BLE001 - reported
            return self._part(name, FAIL, f"does not answer: {type(exc).__name__}: {exc}",
                              backend=kind)  # fmt: skip
        latest = migrations.LATEST
        detail = {"backend": kind, "schema": version, "latest": latest, "latency_ms": latency}
        if version < latest:
            return self._part(
                name, FAIL,
                f"schema at version {version}, latest is {latest}: run `moodle-offload db upgrade`",
                **detail,
            )  # fmt: skip
        if version > latest:
            return self._part(name, FAIL, f"schema at version {version} is newer than this "
                              f"release knows ({latest})", **detail)  # fmt: skip
        return self._part(name, OK, f"{kind} answers, schema at version {version}", **detail)

    def check_moodle(self) -> Part:
        name = "moodle"
        moodle = self.config.moodle
        if moodle is None:
            return self._part(name, OFF, "no [moodle] section: CSV sends only")
        from moodle_ws import functions
        from moodle_ws.client import MoodleClient
        from moodle_ws.errors import MoodleError
        from sidecar.moodle import client_settings

        syncs = self._last_syncs()
        # one try, and a socket timeout past our deadline: the deadline speaks first
        settings = replace(
            client_settings(moodle), attempts=1, timeout=min(moodle.timeout, self.timeout + 1)
        )
        client = MoodleClient(settings)
        started = time.monotonic()
        try:
            site = functions.site_info(client)
        except MoodleError as exc:
            return self._part(name, FAIL, f"{moodle.url}: {exc}", url=moodle.url,
                              last_sync=syncs)  # fmt: skip
        finally:
            client.close()
        latency = round((time.monotonic() - started) * 1000, 1)
        detail = {
            "url": moodle.url,
            "latency_ms": latency,
            "site": site.sitename,
            "release": site.release or site.version,
            "last_sync": syncs,
        }
        summary = f"{site.sitename!r} answers in {latency:.0f} ms"
        problem = self._sync_problem(syncs)
        if problem:
            return self._part(name, WARN, f"{summary}; {problem}", **detail)
        sync = syncs.get("moodle")
        if sync and sync.get("ok_at"):
            summary += f"; schedules synced at {sync['ok_at']}"
        return self._part(name, OK, summary, **detail)

    def _last_syncs(self) -> dict[str, dict]:
        from sidecar.db.models import SyncState

        out: dict[str, dict] = {}
        try:
            with _connected(self._database()):
                for s in SyncState.select():
                    out[s.source] = {
                        "ok_at": _iso(s.ok_at),
                        "schedules": s.schedules,
                        "skipped": s.skipped,
                        "error": s.error,
                        "error_at": _iso(s.error_at),
                    }
        except Exception as exc:  # noqa: BLE001 - the database part says why
            log.debug("health: sync state not readable: %s", type(exc).__name__)
        return out

    def _sync_problem(self, syncs: dict[str, dict]) -> str | None:
        """Why the last schedule sync from Moodle is worth a look (None: it is fine)."""
        sync = syncs.get("moodle")
        if not sync:
            return None
        ok_at, error_at = sync.get("ok_at"), sync.get("error_at")
        if error_at and (not ok_at or error_at >= ok_at):
            return f"the last schedule sync failed at {error_at}: {sync.get('error')}"
        if ok_at:
            age = self.clock() - datetime.fromisoformat(ok_at.removesuffix("Z"))
            limit = SYNC_STALE_INTERVALS * self.config.schedules.sync_interval
            if age.total_seconds() > limit:
                return f"no schedule sync since {ok_at} ({_ago(age)} ago)"
        return None

    def _endpoint(self):
        from providers.aws.clients import Endpoint

        aws = self.config.providers.aws
        # one attempt, and socket timeouts past our deadline: nothing lingers long
        t = self.timeout + 1
        return Endpoint(aws.region, aws.endpoint_url, connect_timeout=t, read_timeout=t,
                        max_attempts=1)  # fmt: skip

    def _depth(self, url: str):
        from providers.aws.queues import QueueReader

        reader = QueueReader(url, self._endpoint())
        try:
            return reader.depth()
        finally:
            reader.close()

    def check_aws_queue(self) -> Part:
        from providers.base import ProviderError

        name, url = "aws queue", self.config.providers.aws.sqs_queue_url
        try:
            d = self._depth(url)
        except ProviderError as exc:
            return self._part(name, FAIL, str(exc), url=url)
        return self._part(
            name, OK, f"{d.waiting:,} batch messages waiting, {d.in_flight:,} in flight",
            url=url, waiting=d.waiting, in_flight=d.in_flight, delayed=d.delayed,
        )  # fmt: skip

    def check_aws_dlq(self) -> Part:
        from providers.base import ProviderError

        name, url = "aws dlq", self.config.providers.aws.dlq_url
        if not url:
            return self._part(
                name, WARN,
                "providers.aws.dlq_url is not set: batches the worker gives up on are not "
                "read back, and their recipients stay queued",
            )  # fmt: skip
        try:
            d = self._depth(url)
        except ProviderError as exc:
            return self._part(name, FAIL, str(exc), url=url)
        detail = {"url": url, "waiting": d.waiting, "in_flight": d.in_flight}
        if d.total:
            return self._part(
                name, WARN,
                f"{d.total:,} dead-letter message{'s' if d.total != 1 else ''}: batches the "
                "worker gave up on (the daemon marks their recipients failed as it reads them)",
                **detail,
            )  # fmt: skip
        return self._part(name, OK, "empty", **detail)

    def check_ses_quota(self) -> Part:
        from providers.aws.account import SesAccount
        from providers.base import ProviderError

        name = "ses quota"
        ses = SesAccount(self._endpoint())
        try:
            q = ses.quota()
        except ProviderError as exc:
            return self._part(name, FAIL, str(exc))
        finally:
            ses.close()
        detail = {"max_24h": q.max_24h, "sent_24h": q.sent_24h, "max_rate": q.max_rate}
        share = q.used_share
        if share is None:
            return self._part(name, OK, f"no daily limit; {q.sent_24h:,.0f} sent in the last "
                              f"24 h, {q.max_rate:g} a second", used=None, **detail)  # fmt: skip
        summary = (
            f"{q.sent_24h:,.0f} of {q.max_24h:,.0f} sent in the last 24 h ({share:.0%}), "
            f"{q.max_rate:g} a second"
        )
        state = FAIL if share >= 1 else WARN if share > SES_WARN_SHARE else OK
        if state == FAIL:
            summary += ": the quota is used up, cloud batches wait"
        elif state == WARN:
            summary += f": above {SES_WARN_SHARE:.0%}"
        return self._part(name, state, summary, used=round(share, 4), **detail)

    def check_cloudflare(self) -> Part:
        """The Worker's /health (ready, its version and email sender), or the jobs queue
        through the REST API; one attempt within the check's deadline."""
        from providers.base import ProviderError
        from providers.cloudflare.queues import CloudflareSettings, QueueSubmitter

        name = "cloudflare"
        cf = self.config.providers.cloudflare
        settings = CloudflareSettings(
            worker_url=cf.worker_url, account_id=cf.account_id, queue_id=cf.queue_id,
            api_token=cf.auth_token.get_secret_value() if cf.auth_token else None,
            api_base=cf.api_base, timeout=self.timeout + 1, attempts=1,
        )  # fmt: skip
        queue = QueueSubmitter(settings)
        try:
            if cf.worker_url:
                health = queue.health()
                detail = {"version": health.get("version"),
                          "email_sender": health.get("email_sender")}  # fmt: skip
                if health.get("status") != "ok":
                    why = "; ".join(health.get("problems") or ["no reason given"])
                    return self._part(name, FAIL, f"the Worker is misconfigured: {why}", **detail)
                return self._part(
                    name, OK, f"Worker {detail['version']} ready, email by "
                    f"{detail['email_sender']}", **detail,
                )  # fmt: skip
            info = queue.queue_info()
            return self._part(name, OK, f"queue {info.get('queue_name') or cf.queue_id} reachable")
        except ProviderError as exc:
            return self._part(name, FAIL, str(exc))
        finally:
            queue.close()

    def check_smtp(self) -> Part:
        from providers.base import ProviderError
        from sidecar.runtime import Runtime

        name = "smtp"
        local = self.config.providers.local
        where = f"{local.smtp_host}:{local.smtp_port}"
        sender = Runtime(self.config).sender_factory()()
        # the socket gives up a little after our deadline, so the thread ends soon after
        sender.settings = replace(sender.settings, timeout=min(local.timeout, self.timeout + 1))
        started = time.monotonic()
        try:
            banner = sender.check()  # connect (STARTTLS, login when set), EHLO, QUIT
        except ProviderError as exc:
            return self._part(name, FAIL, str(exc), server=where, security=local.smtp_security)
        finally:
            sender.close()
        latency = round((time.monotonic() - started) * 1000, 1)
        return self._part(
            name, OK, f"{where} answers: {banner}",
            server=where, security=local.smtp_security, latency_ms=latency, banner=banner,
        )  # fmt: skip

    def check_maildir(self) -> Part:
        path = Path(self.config.providers.local.maildir)
        target = path if path.exists() else path.parent
        if not os.access(target, os.W_OK):
            return self._part("mail folder", FAIL, f"{path} is not writable", path=str(path))
        return self._part("mail folder", OK, f"{path} is writable", path=str(path))

    def check_stuck_jobs(self) -> Part:
        """Jobs not finished whose job, batches and recipients have not changed for
        `stuck_after` (a retry scheduled in the future, or a live worker's lease, counts
        as progress)."""
        name = "stuck jobs"
        now = self.clock()
        limit = now - self.stuck_after
        with _connected(self._database()):
            rows = stuck_jobs(limit)
        after = _ago(self.stuck_after)
        detail: dict[str, Any] = {"count": len(rows), "threshold_seconds": int(
            self.stuck_after.total_seconds())}  # fmt: skip
        if not rows:
            return self._part(name, OK, f"none (no job idle for more than {after})", **detail)
        oldest = rows[0]
        detail["oldest"] = {**oldest, "last_activity": _iso(oldest["last_activity"])}
        detail["jobs"] = [
            {**r, "last_activity": _iso(r["last_activity"])} for r in rows[:STUCK_LISTED]
        ]
        idle = _ago(now - oldest["last_activity"])
        n = len(rows)
        return self._part(
            name, WARN,
            f"{n} job{'s' if n != 1 else ''} without progress for more than {after}; the oldest, "
            f"{oldest['id']} ({oldest['status']}), for {idle}",
            **detail,
        )  # fmt: skip


class _connected:
    """An open connection for the `with` block: opened and closed here only when this
    thread had none (a check runs in a thread of its own; a test may call it directly)."""

    def __init__(self, db: Database):
        self.db = db
        self.opened = False

    def __enter__(self):
        if self.db.is_closed():
            self.db.connect()
            self.opened = True
        return self.db

    def __exit__(self, *exc):
        if self.opened:
            self.db.close()


def stuck_jobs(before: datetime) -> list[dict]:
    """Unfinished jobs whose last activity is older than `before`, oldest first.

    A job's last activity is the latest of its own `updated_at`, its batches' `updated_at`
    and `lease_until`, and its recipients' `updated_at` and `next_attempt_at`. Needs an
    open connection.
    """
    from sidecar.db.models import Batch, Job, Recipient
    from sidecar.status import JOB_FINAL, JobStatus

    open_statuses = [s.value for s in JobStatus if s not in JOB_FINAL]
    jobs = list(
        Job.select(Job.id, Job.type, Job.status, Job.total, Job.updated_at, Job.created_at)
        .where(Job.status.in_(open_statuses), Job.updated_at < before)
        .dicts()
    )
    if not jobs:
        return []
    last = {j["id"]: j["updated_at"] for j in jobs}
    ids = list(last)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        queries = (
            Batch.select(Batch.job, fn.MAX(Batch.updated_at), fn.MAX(Batch.lease_until))
            .where(Batch.job.in_(chunk))
            .group_by(Batch.job),
            Recipient.select(
                Recipient.job, fn.MAX(Recipient.updated_at), fn.MAX(Recipient.next_attempt_at)
            )
            .where(Recipient.job.in_(chunk))
            .group_by(Recipient.job),
        )
        for query in queries:
            for job_id, *times in query.tuples():
                for at in map(_as_datetime, times):
                    if at is not None and at > last[job_id]:
                        last[job_id] = at
    out = [
        {
            "id": j["id"],
            "type": j["type"],
            "status": j["status"],
            "total": j["total"],
            "last_activity": last[j["id"]],
        }  # fmt: skip
        for j in jobs
        if last[j["id"]] < before
    ]
    out.sort(key=lambda r: r["last_activity"])
    return out


def _as_datetime(value: Any) -> datetime | None:
    """MAX() of a datetime column: a datetime, or on SQLite the stored text."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _ago(delta: timedelta) -> str:
    """A duration in one or two units a person reads at a glance: 45s, 12m, 3h 5m, 2d 4h."""
    s = int(delta.total_seconds())
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86_400:
        h, m = divmod(s // 60, 60)
        return f"{h}h {m}m" if m else f"{h}h"
    d, h = divmod(s // 3600, 24)
    return f"{d}d {h}h" if h else f"{d}d"


def _secrets_of(config: Config) -> list[str]:
    """Every secret of the config, and the database URL's password, longest first."""
    values = list(config.secret_values())
    password = urlsplit(config.database.url).password
    if password:
        values += [password, unquote(password)]
    return sorted({v for v in values if v and len(v) >= 4}, key=len, reverse=True)
