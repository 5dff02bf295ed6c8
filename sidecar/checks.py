"""`moodle-offload check`: the configuration, the database, the local delivery path, Moodle."""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sidecar.config import Config
from sidecar.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool | None  # None: not configured, nothing to check
    detail: str


def run_checks(config: Config) -> list[CheckResult]:
    """Every check in order; each failure says how to fix it."""
    results = [CheckResult("config", True, "valid")]
    results.append(_database(config))
    results.append(_local_delivery(config))
    results.append(_certificate_dir(config))
    results.append(_unsubscribe(config))
    if config.providers.aws is not None:
        results.extend(_aws(config))
    if config.providers.cloudflare is not None:
        results.extend(_cloudflare(config))
    from sidecar.moodle import check_lines

    results.extend(CheckResult(name, ok, detail) for ok, name, detail in check_lines(config))
    unknown = _writeback_unknown(config)
    if unknown:
        results.append(unknown)
    return results


def _writeback_unknown(config: Config) -> CheckResult | None:
    """Certificates whose write-back to Moodle may or may not have run (never retried)."""
    from sidecar.db import migrations
    from sidecar.db.connect import open_database
    from sidecar.db.models import database

    try:
        db = open_database(config.database.url)
        db.connect(reuse_if_open=True)
        try:
            if migrations.current_version(db) < 10:
                return None
            database.initialize(db)
            from sidecar.writeback import unknown_count

            n = unknown_count()
        finally:
            db.close()
    except Exception:  # noqa: BLE001 - the database check reports it
        return None
    if not n:
        return None
    return CheckResult(
        "certificate write-back", None,
        f"{n} certificate(s) may or may not be recorded in Moodle (a timeout or an error "
        "after the call went out): they are not tried again; the log and the audit line "
        "certificate_record_unknown name them: check them in Moodle",
    )  # fmt: skip


def _database(config: Config) -> CheckResult:
    from sidecar.db import migrations
    from sidecar.db.connect import open_database

    try:
        db = open_database(config.database.url)
        db.connect(reuse_if_open=True)
        try:
            migrations.refuse_shared(db)
        except ConfigError as exc:
            db.close()
            return CheckResult("database", False, str(exc))
        empty = migrations.is_empty(db)
        version = migrations.current_version(db)
        unrecorded = migrations.unrecorded_steps(db)
        named_like_ours = migrations.tables_named_like_ours(db)
        db.close()
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        return CheckResult("database", False, f"cannot open: {type(exc).__name__}: {exc}")
    latest = migrations.LATEST
    if empty:
        # a fresh install: not a fault, `run` creates the schema at start
        return CheckResult("database", True, "not created yet: `db upgrade` or `run` creates it")
    if version > latest:
        return CheckResult(
            "database", False,
            f"schema at version {version} is newer than this moodle-offload knows "
            f"(latest {latest}): a newer release upgraded it; run that release",
        )  # fmt: skip
    if version == 0 and named_like_ours:
        # no step recorded: only a first upgrade stopped before its record, or another
        # application whose tables happen to fit ours, leaves these
        return CheckResult(
            "database", False,
            f"tables named like moodle-offload's exist but none of its schema steps is "
            f"recorded ({', '.join(named_like_ours)}): they may belong to another "
            "application: give moodle-offload a database of its own (database.url); if "
            "they are moodle-offload's, from a first `db upgrade` that stopped half way, "
            "run `moodle-offload db upgrade` to finish it",
        )  # fmt: skip
    if unrecorded:
        return CheckResult(
            "database", False,
            f"a schema upgrade stopped half way (step{'s' if len(unrecorded) > 1 else ''} "
            f"{', '.join(map(str, unrecorded))} not recorded): "
            "run `moodle-offload db upgrade` to finish it",
        )  # fmt: skip
    if version < latest:
        return CheckResult(
            "database", False,
            f"schema at version {version}, latest is {latest}: run `moodle-offload db upgrade`",
        )  # fmt: skip
    return CheckResult("database", True, f"schema at version {version}")


def _unsubscribe(config: Config) -> CheckResult:
    from sidecar import unsubscribe

    if not config.unsubscribe.enabled:
        return CheckResult("unsubscribe", None, "off (unsubscribe.enabled = false)")
    why = unsubscribe.unavailable(config)
    if why:
        return CheckResult("unsubscribe", None, f"bulk mail goes without links: {why}")
    url = f"{config.server.public_url}/unsubscribe/..."
    if not url.startswith("https://"):
        return CheckResult(
            "unsubscribe", None,
            f"links to {url}, but mailbox providers honour one-click unsubscribe over https "
            "only: give server.public_url an https:// address",
        )  # fmt: skip
    return CheckResult("unsubscribe", True, f"one-click links to {url}")


def _local_delivery(config: Config) -> CheckResult:
    local = config.providers.local
    if local.maildir is not None:
        path = Path(local.maildir)
        target = path if path.exists() else path.parent
        if not os.access(target, os.W_OK):
            return CheckResult("local delivery", False, f"maildir {path} is not writable")
        return CheckResult("local delivery", True, f"maildir {path}")
    from providers.base import ProviderError
    from sidecar.runtime import Runtime

    sender = Runtime(config).sender_factory()()
    try:
        banner = sender.check()
    except ProviderError as exc:
        return CheckResult(
            "local delivery", False,
            f"SMTP {local.smtp_host}:{local.smtp_port}: {exc} "
            "(check providers.local.smtp_host/smtp_port/smtp_security)",
        )  # fmt: skip
    finally:
        sender.close()
    return CheckResult(
        "local delivery", True, f"SMTP {local.smtp_host}:{local.smtp_port}: {banner}"
    )


def _certificate_dir(config: Config) -> CheckResult:
    path = Path(config.providers.local.certificate_dir)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        return CheckResult(
            "certificates", False,
            f"{path} is not writable: set providers.local.certificate_dir",
        )  # fmt: skip
    return CheckResult("certificates", True, str(path))


def _prober(out: list[CheckResult]):
    """`probe(name, fix, fn)`: runs `fn() -> (ok, detail)` and appends its CheckResult; a
    ProviderError fails the check with its message and `fix`."""
    from providers.base import ProviderError

    def probe(name: str, fix: str, fn) -> None:
        try:
            ok, detail = fn()
        except ProviderError as exc:
            ok, detail = False, f"{exc} ({fix})"
        out.append(CheckResult(name, ok, detail))

    return probe


def _aws(config: Config) -> list[CheckResult]:
    """The job queue (size limit, redrive), the polled queues, SES quota and sender, bucket."""
    from sidecar.cloud import AwsOffload
    from sidecar.runtime import Runtime

    aws = config.providers.aws
    offload = AwsOffload(config, Runtime(config).composer, lambda: None)
    out: list[CheckResult] = []

    probe = _prober(out)

    def job_queue():
        info = offload.sqs.check()
        return info.dlq_arn is not None, info.describe()

    def queue(url):
        def read():
            attrs = offload.reader(url).attributes()
            depth = attrs.get("ApproximateNumberOfMessages", "?")
            return True, f"{url}: readable, {depth} messages waiting"

        return read

    def ses_quota():
        q = offload.ses.quota()
        return q.unlimited or q.max_24h > 0, q.describe()

    def sender():
        return offload.ses.sender_verified(aws.ses_from)

    try:
        probe("aws job queue", "check providers.aws.sqs_queue_url and region", job_queue)
        for key in ("results_queue_url", "dlq_url", "ses_events_queue_url"):
            url = getattr(aws, key)
            if url:
                probe(f"aws {key}", f"check providers.aws.{key}", queue(url))
        probe("aws ses quota", "grant ses:GetSendQuota to the sidecar", ses_quota)
        probe("aws ses sender", "verify providers.aws.ses_from in SES", sender)
        probe(
            "aws certificates bucket", "check providers.aws.s3_bucket",
            lambda: (True, offload.certificates.check()),
        )  # fmt: skip
    finally:
        offload.close()
    return out


def _cloudflare(config: Config) -> list[CheckResult]:
    """The Worker (health, version, email sender) or the queue through the REST API, the
    pulled queues, and the R2 bucket; each failure names the key or setting to fix."""
    from sidecar.cloud import CloudflareOffload
    from sidecar.runtime import Runtime

    cf = config.providers.cloudflare
    offload = CloudflareOffload(config, Runtime(config).composer, lambda: None)
    out: list[CheckResult] = []

    probe = _prober(out)

    def queue(queue_id: str):
        def read():
            info = offload.queue.queue_info(queue_id)
            return True, f"queue {info.get('queue_name') or queue_id}: reachable"

        return read

    try:
        if cf.worker_url:
            probe("cloudflare worker", "check providers.cloudflare.worker_url, deploy the "
                  "Worker, and its secrets (docs/cloudflare.md)",
                  lambda: (True, offload.check_queue()))  # fmt: skip
        if cf.account_id and cf.auth_token:
            for key in ("queue_id", "results_queue_id", "dlq_id"):
                if getattr(cf, key):
                    fix = (f"check providers.cloudflare.{key}, account_id and auth_token "
                           "(Queues Read and Edit)")  # fmt: skip
                    probe(f"cloudflare {key}", fix, queue(getattr(cf, key)))
        if cf.r2_bucket:
            fix = "check providers.cloudflare.r2_bucket, r2_endpoint and the R2 keys"
            bucket = offload.certificates
            probe("cloudflare certificates bucket", fix, lambda: (True, bucket.check()))
        elif config.offload.certificate_mode != "local":
            out.append(CheckResult(
                "cloudflare certificates bucket", False,
                "no R2 bucket: a certificate job on the cloudflare route cannot be stored "
                '(set r2_bucket and its keys, or offload.certificate_mode = "local")',
            ))  # fmt: skip
    finally:
        offload.close()
    return out
