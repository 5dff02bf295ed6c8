"""Wiring: a validated Config → the database, renderer, delivery and callback services.

Heavy objects are built on first use, so `--help` and config errors touch nothing.
"""

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from peewee import Database

from sidecar.callbacks import CallbackService, CallbackSettings
from sidecar.config import Config
from sidecar.db import migrations
from sidecar.db.connect import open_database
from sidecar.delivery import DeliverySettings, LocalDelivery
from sidecar.errors import ConfigError
from sidecar.render import Renderer

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """Naive UTC now: the one clock the ledger uses."""
    return datetime.now(UTC).replace(tzinfo=None)


def secret(value) -> str | None:
    return None if value is None else value.get_secret_value()


class Runtime:
    def __init__(self, config: Config, *, clock: Callable[[], datetime] = utcnow):
        self.config = config
        self.clock = clock
        self.stop = threading.Event()
        self._pdf = None
        # told after each Moodle request of a welcome batch (the daemon's watchdog beat)
        self.welcome_progress: Callable[[float], None] | None = None

    # --- database --------------------------------------------------------------------------

    @cached_property
    def db(self) -> Database:
        return open_database(self.config.database.url)

    def upgrade(self) -> list[int]:
        return migrations.upgrade(self.db)

    def ready_db(self) -> Database:
        """The database, upgraded to the latest schema."""
        self.upgrade()
        return self.db

    # --- services --------------------------------------------------------------------------

    @cached_property
    def renderer(self) -> Renderer:
        return Renderer(self.config.templates.dir)

    def callback_settings(self) -> CallbackSettings:
        sec = self.config.security
        return CallbackSettings(
            secrets=[s.get_secret_value() for s in sec.callback_secrets],
            max_skew=sec.callback_max_skew,
            max_bytes=self.config.server.callback_max_bytes,
            max_attempts=self.config.offload.retry.max_attempts,
        )

    @cached_property
    def callbacks(self) -> CallbackService:
        return CallbackService(self.callback_settings(), self.clock)

    def sender_factory(self):
        """A callable that opens the configured local sender (maildir or SMTP)."""
        local = self.config.providers.local
        if local.maildir is not None:
            from providers.local.maildir import MaildirSender

            maildir = Path(local.maildir)
            return lambda: MaildirSender(maildir)
        from providers.local.settings import SmtpSettings
        from providers.local.smtp import SmtpSender

        settings = SmtpSettings(
            host=local.smtp_host,
            port=local.smtp_port,
            security=local.smtp_security,
            user=local.smtp_user,
            password=secret(local.smtp_password),
            sender=local.from_,
            rate_per_second=local.rate_per_second,
            timeout=local.timeout,
        )
        return lambda: SmtpSender(settings)

    def pdf_pool(self, processes: int = 1):
        if self._pdf is None:
            from providers.local.pdf import PdfPool

            self._pdf = PdfPool(processes)
        return self._pdf

    def delivery(self, pdf_processes: int = 1) -> LocalDelivery:
        local = self.config.providers.local
        retry = self.config.offload.retry
        settings = DeliverySettings(
            sender=local.from_ or "moodle-offload@localhost",
            certificate_dir=Path(local.certificate_dir),
            public_url=self.config.server.public_url,
            max_attempts=retry.max_attempts,
            backoff=tuple(float(b) for b in retry.backoff),
            unsubscribe=self.unsubscribe_links,
        )
        return LocalDelivery(
            settings,
            open_sender=self.sender_factory(),
            renderer=self.renderer,
            pdf=self.pdf_pool(pdf_processes) if pdf_processes > 0 else None,
            clock=self.clock,
            stop=self.stop,
            welcome=self.welcome_passwords,
        )

    def welcome_passwords(self):
        """The password step of welcome jobs; raises ConfigError without [moodle] or
        security.encryption_key."""
        if "_welcome" not in self.__dict__:
            from sidecar.moodle import open_client
            from sidecar.temppasswords import Sealer
            from sidecar.welcomepasswords import WelcomePasswords

            sealer = Sealer.from_config(self.config)
            client = open_client(self.config, progress=self.welcome_progress)
            policy = self.config.moodle.password_policy  # type: ignore[union-attr]
            self.__dict__["_welcome"] = WelcomePasswords(client, sealer, policy, self.clock)
        return self.__dict__["_welcome"]

    @cached_property
    def unsubscribe_links(self):
        """The unsubscribe link maker; None when off or not configured (`check` says why)."""
        from sidecar import unsubscribe

        return unsubscribe.links_for(self.config)

    @cached_property
    def composer(self):
        from sidecar.compose import Composer

        return Composer(
            self.renderer, self.config.server.public_url, self.clock, self.unsubscribe_links
        )

    @cached_property
    def aws(self):
        """The AWS offload pieces (SQS, SES, S3, queue readers); needs [providers.aws]."""
        from sidecar.cloud import AwsOffload

        if self.config.providers.aws is None:
            raise ConfigError("providers.aws: not configured (needed for the aws route)")
        return AwsOffload(self.config, self.composer, self.clock)

    @cached_property
    def cloudflare(self):
        """The Cloudflare offload pieces (the queue, pull readers, R2); needs
        [providers.cloudflare]. Certificates are rendered here, in one worker process."""
        from sidecar.cloud import CloudflareOffload

        if self.config.providers.cloudflare is None:
            raise ConfigError(
                "providers.cloudflare: not configured (needed for the cloudflare route)"
            )
        return CloudflareOffload(self.config, self.composer, self.clock, self.pdf_pool())

    def offloads(self) -> list:
        """The configured cloud offloads (AwsOffload, CloudflareOffload), built."""
        providers = self.config.providers
        return [getattr(self, name) for name in ("aws", "cloudflare")
                if getattr(providers, name) is not None]  # fmt: skip

    def cloud_problem(self, provider: str) -> str | None:
        """Why the cloud route `provider` cannot take a job now; None when it can."""
        if provider not in ("aws", "cloudflare"):
            return f"no {provider} connector is available in this version"
        if getattr(self.config.providers, provider) is None:
            return f"providers.{provider} is not configured"
        return getattr(self, provider).problem()

    def health(self) -> tuple[bool, dict]:
        from sidecar.db.models import Job

        state: dict = {"time": self.clock().isoformat() + "Z"}
        try:
            self.db.connect(reuse_if_open=True)
            state["database"] = {
                "ok": True,
                "schema": migrations.current_version(self.db),
                "jobs": Job.select().count(),
            }
            ok = True
        except Exception as exc:  # noqa: BLE001 - health reports, never raises
            state["database"] = {"ok": False, "error": type(exc).__name__}
            ok = False
        state["scheduler"] = {"running": not self.stop.is_set()}
        state["last_sync"] = None
        if ok:
            from sidecar.sync import last_sync

            try:
                state["last_sync"] = last_sync() or None
            except Exception as exc:  # noqa: BLE001 - health reports, never raises
                state["last_sync"] = {"error": type(exc).__name__}
        state["stuck_jobs"] = self._stuck() if ok else None
        stuck = bool((state["stuck_jobs"] or {}).get("count"))
        state["status"] = "down" if not ok else "degraded" if stuck else "ok"
        return ok, state

    def _stuck(self) -> dict:
        """Jobs idle longer than `[dashboard] stuck_after`: degraded, not down (a stuck job
        needs a person, not a restart). {count, oldest: {id, last_activity}}."""
        from datetime import timedelta

        from sidecar.health import stuck_jobs

        after = timedelta(seconds=self.config.dashboard.stuck_after)
        try:
            found = stuck_jobs(self.clock() - after)
        except Exception as exc:  # noqa: BLE001 - health reports, never raises
            return {"error": type(exc).__name__}
        oldest = None
        if found:
            first = found[0]
            oldest = {"id": first["id"], "last_activity": first["last_activity"].isoformat() + "Z"}
        return {"count": len(found), "after_seconds": int(after.total_seconds()), "oldest": oldest}

    def close(self) -> None:
        for name in ("aws", "cloudflare"):
            if name in self.__dict__:
                self.__dict__.pop(name).close()
        if self._pdf is not None:
            self._pdf.close()
            self._pdf = None
        if "db" in self.__dict__ and not self.db.is_closed():
            self.db.close()
