"""Schedules from Moodle and the schedules file into the database.

New, changed (fingerprint), disabled and deleted schedules are applied; a malformed one
is skipped with a warning naming its id and field while the rest sync, and its last good
copy stays. When a source cannot be read (Moodle down, file missing) nothing of that
source changes: the last good copy keeps firing, the error is logged and recorded.
"""

import logging
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from moodle_ws import companion
from moodle_ws.client import MoodleClient
from moodle_ws.errors import MoodleError
from schedules.model import MalformedSchedule, Schedule
from sidecar import metrics
from sidecar.config import Config
from sidecar.db import store
from sidecar.db.models import Company, ScheduleRecord, SyncState

log = logging.getLogger(__name__)


@dataclass
class SyncResult:
    source: str
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: list[str] = field(default_factory=list)  # one message per malformed schedule
    error: str | None = None

    @property
    def summary(self) -> str:
        if self.error:
            return f"{self.source}: not synced, the last good copy stays: {self.error}"
        text = (
            f"{self.source}: {self.new} new, {self.changed} changed, {self.unchanged} unchanged, "
            f"{self.deleted} deleted"
        )
        return text + (f", {len(self.skipped)} malformed skipped" if self.skipped else "")


def sources(config: Config) -> list[str]:
    s = config.schedules.source
    return ["moodle", "file"] if s == "both" else [s]


def sync_all(
    config: Config, open_client: Callable[[], MoodleClient], now: datetime
) -> list[SyncResult]:
    """Sync every configured source; never raises for a source that cannot be read."""
    results = []
    for source in sources(config):
        if source == "moodle":
            results.append(_sync_moodle(config, open_client, now))
        else:
            results.append(_sync_file(config, now))
    return results


def _sync_moodle(config: Config, open_client, now: datetime) -> SyncResult:
    if config.moodle is None:
        return _failed("moodle", "no [moodle] section: set moodle.url and moodle.token", now)
    prefix = config.moodle.companion_prefix
    client = open_client()
    try:
        rows, warnings = companion.get_schedules(client, prefix)
        for w in warnings:
            log.warning("schedules from Moodle: warning %s: %s", w.warningcode, w.message)
        cloud = _cloud_settings(client, prefix)
    except MoodleError as exc:
        return _failed("moodle", str(exc), now)
    finally:
        client.close()
    parsed, skipped = [], []
    for row in rows:
        try:
            parsed.append(Schedule.from_remote(row, "moodle"))
        except MalformedSchedule as exc:
            skipped.append((exc.schedule_id, str(exc)))
    result = _apply("moodle", parsed, skipped, now)
    if cloud is not None:
        _store_cloud_settings(config, cloud, now)
    return result


def _cloud_settings(client: MoodleClient, prefix: str):
    """Moodle's per-company cloud settings, or None when the site has no such function."""
    try:
        return companion.get_cloud_settings(client, prefix)
    except MoodleError as exc:
        log.debug("cloud settings from Moodle not read: %s", exc)
        return None
    except (KeyError, TypeError, ValueError) as exc:
        # Every field is nullable in Moodle's return description: a company with a null
        # threshold must not stop the schedules from syncing.
        log.warning(
            "cloud settings from Moodle not applied, the stored ones stay: %s_get_cloud_settings "
            "gave a company without a usable value (%s: %s)", prefix, type(exc).__name__, exc,
        )  # fmt: skip
        return None


def _store_cloud_settings(config: Config, settings, now: datetime) -> None:
    overridden = {c.id for c in config.companies}  # the config file wins
    names = {"AWS": "aws", "CLOUDFLARE": "cloudflare", "SYSTEM": "local"}
    with store.atomic():
        for s in settings:
            if s.companyid in overridden:
                continue
            store.upsert(Company, {"id": s.companyid}, {
                "enabled": s.enabled, "provider": names.get(s.email_provider),
                "threshold": s.threshold, "updated_at": now,
            })  # fmt: skip


def _sync_file(config: Config, now: datetime) -> SyncResult:
    path = config.schedules.file
    if path is None:
        return _failed("file", "schedules.file is not set", now)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        return _failed("file", f"{path}: cannot read: {exc.strerror}", now)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return _failed("file", f"{path}: invalid TOML: {exc}", now)
    entries = data.get("schedule", [])
    if not isinstance(entries, list):
        return _failed("file", f"{path}: [[schedule]] must be an array of tables", now)
    parsed, skipped = [], []
    for i, entry in enumerate(entries, 1):
        try:
            parsed.append(Schedule.from_file_entry(entry))
        except MalformedSchedule as exc:
            skipped.append((exc.schedule_id, f"{path}: [[schedule]] #{i}: {exc}"))
    return _apply("file", parsed, skipped, now)


def _apply(source: str, parsed: list[Schedule], skipped, now: datetime) -> SyncResult:
    result = SyncResult(source, skipped=[msg for _, msg in skipped])
    for msg in result.skipped:
        log.warning("schedule sync: %s: skipped; the others sync", msg)
    kept = {sid for sid, _ in skipped if sid is not None}  # malformed now: keep the old copy
    seen = set()
    with store.atomic():
        existing = {r.remote_id: r for r in ScheduleRecord.select().where(
            ScheduleRecord.source == source)}  # fmt: skip
        for s in parsed:
            if s.id in seen:
                result.skipped.append(f"schedule {s.id}: given twice; the first copy is used")
                log.warning("schedule sync: %s", result.skipped[-1])
                continue
            seen.add(s.id)
            old = existing.get(s.id)
            values = dict(
                # The column is a label (255 on PostgreSQL/MariaDB); data keeps the full name.
                name=s.name[:255], enabled=s.enabled, data=s.as_row(),
                fingerprint=s.fingerprint,
                timemodified=s.timemodified, synced_at=now, deleted_at=None,
            )  # fmt: skip
            if old is None:
                store.upsert(
                    ScheduleRecord,
                    {"source": source, "remote_id": s.id},
                    {"first_seen_at": now, **values},
                )  # another sync may race us
                result.new += 1
                log.info("schedule %s/%d %r: new", source, s.id, s.name)
            elif old.fingerprint != s.fingerprint or old.deleted_at is not None:
                if s.enabled and (not old.enabled or old.deleted_at is not None):
                    # Re-enabled or restored: due times from while it was off never fire.
                    values["first_seen_at"] = now
                ScheduleRecord.update(**values).where(ScheduleRecord.id == old.id).execute()
                result.changed += 1
                log.info("schedule %s/%d %r: changed", source, s.id, s.name)
            else:
                ScheduleRecord.update(synced_at=now).where(ScheduleRecord.id == old.id).execute()
                result.unchanged += 1
        gone = [r.id for rid, r in existing.items()
                if rid not in seen and rid not in kept and r.deleted_at is None]  # fmt: skip
        if gone:
            ScheduleRecord.update(deleted_at=now).where(ScheduleRecord.id.in_(gone)).execute()
            result.deleted = len(gone)
            log.info("schedules %s: %d deleted at the source", source, len(gone))
        store.upsert(SyncState, {"source": source}, {
            "ok_at": now, "error": None, "error_at": None, "schedules": len(seen),
            "skipped": len(skipped),
        })  # fmt: skip
    metrics.schedule_sync(source, True)
    return result


def _failed(source: str, error: str, now: datetime) -> SyncResult:
    log.warning("schedule sync from %s failed, keeping the last good copy: %s", source, error)
    with store.atomic():
        store.upsert(SyncState, {"source": source}, {"error": error, "error_at": now})
    metrics.schedule_sync(source, False)
    return SyncResult(source, error=error)


def last_sync() -> dict:
    """For /healthz: per source, when it last synced and the last error."""
    out = {}
    for s in SyncState.select():
        out[s.source] = {
            "ok_at": s.ok_at.isoformat() + "Z" if s.ok_at else None,
            "schedules": s.schedules,
            "skipped": s.skipped,
            "error": s.error,
            "error_at": s.error_at.isoformat() + "Z" if s.error_at else None,
        }
    return out
