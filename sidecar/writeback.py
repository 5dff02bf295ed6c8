"""Issued certificates written back to Moodle through `{prefix}_record_certificate`.

Each certificate is recorded once: (userid, courseid, url = `{public_url}/certificates/
{code}`, jobid). Issued means delivered (the recipient is `sent`), whether the PDF was
made here or in the cloud. The state lives in the ledger (`certificate.record_state`):

- None: not yet. A certificate goes back to None only when Moodle cannot have run the
  call: the connection was never made (refused, DNS), Moodle was in maintenance, or the
  function is not (or no longer) in the token's service. It is tried again later.
- `sending`: claimed (compare-and-set, committed) before the call goes out. A daemon
  that stops during the call leaves it so; after STALE it becomes `unknown`.
- `recorded`: Moodle answered `status: true`.
- `unknown`: the call may have run (a timeout, HTTP 5xx, a lost connection, an answer
  that is not Moodle's): never tried again, logged and audited
  (`certificate_record_unknown`); `check` counts them. Look in Moodle, then set it
  right by hand if needed.
- `refused`: Moodle answered an error (unknown user or course) or `status: false`.

A site without the function is skipped silently (`check` says what that disables).
`WriteBack.run_once` is called by the daemon's own write-back thread, never by the
delivery loop, so a slow Moodle never holds mail back.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from moodle_ws import companion, functions
from moodle_ws.errors import (
    AccessDenied,
    MoodleAPIError,
    MoodleError,
    NotSent,
    SiteMaintenance,
)
from sidecar import crashpoints
from sidecar.certificates import urls
from sidecar.db import store
from sidecar.db.models import Certificate, Recipient
from sidecar.status import RecipientStatus

log = logging.getLogger(__name__)

SENDING, RECORDED, UNKNOWN, REFUSED = "sending", "recorded", "unknown", "refused"
#: a claim older than this belongs to a call that ended without an answer being stored
STALE = timedelta(minutes=15)
#: how long the site's function list is trusted before asking again
SITE_TTL = timedelta(minutes=10)


@dataclass
class Tally:
    recorded: int = 0
    unknown: int = 0
    refused: int = 0
    deferred: int = 0  # back to None: Moodle cannot have run it
    skipped: str = ""  # why nothing was tried (function missing, no [moodle])
    codes: dict[str, str] = field(default_factory=dict)  # code -> state reached


class WriteBack:
    """One site's write-back. `open_client()` gives a MoodleClient (closed after each run);
    `clock()` is naive UTC."""

    def __init__(self, config, open_client: Callable, clock: Callable[[], datetime],
                 batch: int = 100):  # fmt: skip
        self.config = config
        self.open_client = open_client
        self.clock = clock
        self.batch = batch
        self._has_function: tuple[datetime, bool] | None = None

    @property
    def function(self) -> str:
        return f"{self.config.moodle.companion_prefix}_record_certificate"

    def run_once(self) -> Tally:
        """Record up to `batch` issued certificates not recorded yet; returns what it did.
        Raises nothing for Moodle's failures (they are states); stops at the first call
        that Moodle could not be reached for."""
        tally = Tally()
        crashpoints.hang("writeback.run")
        if self.config.moodle is None:
            tally.skipped = "no [moodle] section"
            return tally
        now = self.clock()
        self._expire_claims(now)
        todo = pending(self.batch)
        if not todo:
            return tally
        client = self.open_client()
        try:
            if not self._site_has_function(client, now):
                tally.skipped = f"{self.function} is not in the token's service"
                return tally
            for cert in todo:
                state = self._record(client, cert)
                if state is None:
                    continue  # another daemon took it
                tally.codes[cert.code] = state
                if state == RECORDED:
                    tally.recorded += 1
                elif state == UNKNOWN:
                    tally.unknown += 1
                elif state == REFUSED:
                    tally.refused += 1
                else:
                    tally.deferred += 1
                    break  # Moodle is unreachable: the rest waits for the next run
        finally:
            client.close()
        if tally.recorded or tally.unknown or tally.refused:
            log.info("certificates written back to Moodle: %d recorded, %d unknown, %d refused",
                     tally.recorded, tally.unknown, tally.refused)  # fmt: skip
        return tally

    def _site_has_function(self, client, now: datetime) -> bool:
        cached = self._has_function
        if cached is None or now - cached[0] > SITE_TTL:
            has = functions.site_info(client).has(self.function)
            if not has:
                log.debug("write-back off: %s is not in the token's service", self.function)
            self._has_function = cached = (now, has)
        return cached[1]

    def _expire_claims(self, now: datetime) -> None:
        stale = list(Certificate.select(Certificate.code, Certificate.job_id).where(
            Certificate.record_state == SENDING, Certificate.record_at < now - STALE))  # fmt: skip
        for cert in stale:
            if _move(cert.code, SENDING, UNKNOWN, now, "the daemon stopped during the call"):
                _report_unknown(cert, now, "the daemon stopped during the call")

    def _record(self, client, cert: Certificate) -> str | None:
        now = self.clock()
        if not _move(cert.code, None, SENDING, now):
            return None
        url = urls(self.config.server.public_url, cert.code)[0]
        prefix = self.config.moodle.companion_prefix
        try:
            ok = companion.record_certificate(
                client, cert.userid, cert.courseid, url, cert.job_id, prefix
            )
        except (NotSent, SiteMaintenance) as exc:
            return self._defer(cert, exc)
        except AccessDenied as exc:  # the function left the service: Moodle ran nothing
            self._has_function = None
            return self._defer(cert, exc)
        except MoodleAPIError as exc:
            return self._settle(cert, REFUSED, str(exc))
        except MoodleError as exc:  # timeout, 5xx, lost connection, not Moodle's answer
            _report_unknown(cert, self.clock(), str(exc))
            return self._settle(cert, UNKNOWN, str(exc))
        except Exception as exc:  # noqa: BLE001 - anything else: it may have run
            log.exception("certificate %s: write-back failed", cert.code)
            _report_unknown(cert, self.clock(), repr(exc))
            return self._settle(cert, UNKNOWN, repr(exc))
        if not ok:
            return self._settle(cert, REFUSED, f"{self.function} answered status false")
        return self._settle(cert, RECORDED, None)

    def _defer(self, cert: Certificate, exc: Exception) -> str:
        log.warning("certificate %s: not written back yet (Moodle ran nothing): %s",
                    cert.code, exc)  # fmt: skip
        _move(cert.code, SENDING, None, self.clock(), str(exc))
        return "deferred"

    def _settle(self, cert: Certificate, state: str, error: str | None) -> str:
        if state == REFUSED:
            log.warning("certificate %s: Moodle refused the write-back: %s", cert.code, error)
        _move(cert.code, SENDING, state, self.clock(), error)
        return state


def pending(limit: int) -> list[Certificate]:
    """Issued (delivered) certificates with a course, never written back, oldest first."""
    recipient = (Recipient.job == Certificate.job_id) & (Recipient.userid == Certificate.userid)
    return list(
        Certificate.select(
            Certificate.code, Certificate.job_id, Certificate.userid, Certificate.courseid
        )  # fmt: skip
        .join(Recipient, on=recipient)
        .where(
            Certificate.record_state.is_null(),
            Certificate.courseid.is_null(False),
            Recipient.status == RecipientStatus.SENT,
        )
        .order_by(Certificate.issued_at, Certificate.code)
        .limit(limit)
    )


def unknown_count() -> int:
    """Certificates whose write-back may or may not have run (for `check`)."""
    return Certificate.select().where(Certificate.record_state == UNKNOWN).count()


def _move(code: str, old: str | None, new: str | None, now: datetime,
          error: str | None = None) -> bool:  # fmt: skip
    """Compare-and-set the record state; False (and no change) when it was not `old`."""
    current = Certificate.record_state.is_null() if old is None else Certificate.record_state == old
    n = (
        Certificate.update(record_state=new, record_at=now, record_error=error)
        .where(Certificate.code == code, current)
        .execute()
    )
    return n == 1


def _report_unknown(cert: Certificate, now: datetime, why: str) -> None:
    log.error(
        "certificate %s: Moodle may or may not have recorded it (%s); it is not tried again: "
        "check the learner's record in Moodle",
        cert.code, why,
    )  # fmt: skip
    store.audit("certificate_record_unknown", now, cert.job_id, code=cert.code,
                userid=cert.userid, error=why[:300])  # fmt: skip
