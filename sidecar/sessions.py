"""Dashboard sessions and the sign-in rate limit, both in the database (the daemon's
HTTP threads, and a restart, see the same state).

The cookie is `<id>.<mac>`: a random 32-byte id and an HMAC-SHA256 of it under a key
derived (HKDF) from `security.encryption_key`; the row holds only the id's SHA-256, so
neither a copy of the database nor a forged cookie signs anyone in. A session ends
after `dashboard.idle_timeout` without a request or `dashboard.absolute_timeout` after
sign-in, whichever comes first. Each session has its own CSRF token.
"""

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from peewee import fn

from providers.signing import derive_key
from sidecar.access import Principal
from sidecar.config import DashboardConfig
from sidecar.db.models import LoginFailure, WebSession

#: the HKDF label: a key for dashboard cookies and nothing else
PURPOSE = "moodle-offload dashboard session v1"
#: `seen_at` is written at most this often (seconds), not on every request
_TOUCH_EVERY = 30


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def cookie_key(encryption_key: str) -> bytes:
    return derive_key(encryption_key, PURPOSE)


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    cookie: str


class Sessions:
    """Creates, reads and ends sessions; `clock` gives naive UTC."""

    def __init__(self, key: bytes, settings: DashboardConfig, clock):
        self.key = key
        self.settings = settings
        self.clock = clock

    # --- signed values ---------------------------------------------------------------------

    def sign(self, value: str, purpose: str) -> str:
        mac = hmac.new(self.key, f"{purpose}:{value}".encode("ascii"), hashlib.sha256).digest()
        return f"{value}.{_b64(mac)}"

    def unsign(self, signed: str | None, purpose: str) -> str | None:
        """The value of a `sign`ed string; None when missing, malformed or altered."""
        if not signed or len(signed) > 200 or not signed.isascii():
            return None
        value, _, _mac = signed.rpartition(".")
        if not value or not hmac.compare_digest(self.sign(value, purpose), signed):
            return None
        return value

    # --- sessions --------------------------------------------------------------------------

    def create(self, principal: Principal, address: str) -> Session:
        """A new session (always a new id: a cookie set before sign-in is never kept)."""
        sid, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.clock()
        WebSession.create(
            id_hash=_sha256(sid),
            name=principal.name,
            source=principal.source,
            is_admin=principal.is_admin,
            companies=list(principal.companies),
            read_only=principal.read_only,
            csrf=csrf,
            address=address[:64],
            created_at=now,
            seen_at=now,
        )
        return Session(principal, csrf, self.sign(sid, "session"))

    def read(self, cookie: str | None) -> Session | None:
        """The live session of a cookie; None when absent, forged, ended or timed out
        (a timed-out row is deleted)."""
        sid = self.unsign(cookie, "session")
        if sid is None:
            return None
        row = WebSession.get_or_none(WebSession.id_hash == _sha256(sid))
        if row is None:
            return None
        now = self.clock()
        idle = timedelta(seconds=self.settings.idle_timeout)
        absolute = timedelta(seconds=self.settings.absolute_timeout)
        if now - row.seen_at >= idle or now - row.created_at >= absolute:
            row.delete_instance()
            return None
        if (now - row.seen_at).total_seconds() >= _TOUCH_EVERY:
            WebSession.update(seen_at=now).where(WebSession.id_hash == row.id_hash).execute()
        principal = Principal(
            name=row.name,
            kind="session",
            is_admin=row.is_admin,
            companies=tuple(row.companies or ()),
            read_only=row.read_only,
            source=row.source,
        )
        return Session(principal, row.csrf, cookie or "")

    def end(self, cookie: str | None) -> None:
        """Delete the session of `cookie` (nothing when there is none)."""
        sid = self.unsign(cookie, "session")
        if sid is not None:
            WebSession.delete().where(WebSession.id_hash == _sha256(sid)).execute()

    def purge(self) -> int:
        """Delete the sessions past either timeout; returns how many."""
        now = self.clock()
        return (
            WebSession.delete()
            .where(
                (WebSession.seen_at <= now - timedelta(seconds=self.settings.idle_timeout))
                | (WebSession.created_at <= now - timedelta(seconds=self.settings.absolute_timeout))
            )
            .execute()
        )

    # --- the sign-in rate limit ------------------------------------------------------------

    def retry_after(self, address: str, username: str) -> int:
        """Seconds until a sign-in from `address` as `username` may be tried again; 0 when
        neither has `login_max_failures` failures within `login_window`."""
        now = self.clock()
        window = timedelta(seconds=self.settings.login_window)
        since = now - window
        wait = 0
        for column, value in ((LoginFailure.address, address[:64]),
                              (LoginFailure.username, username[:191])):  # fmt: skip
            q = LoginFailure.select(fn.COUNT(LoginFailure.id), fn.MIN(LoginFailure.at)).where(
                column == value, LoginFailure.at > since
            )
            count, first = q.scalar(as_tuple=True)
            if count and count >= self.settings.login_max_failures:
                # the oldest failure leaving the window frees one try
                wait = max(wait, int((first + window - now).total_seconds()) + 1)
        return wait

    def record_failure(self, address: str, username: str) -> None:
        now = self.clock()
        LoginFailure.create(at=now, address=address[:64], username=username[:191])
        LoginFailure.delete().where(
            LoginFailure.at <= now - timedelta(seconds=self.settings.login_window)
        ).execute()

    def clear_failures(self, username: str) -> None:
        """Forget `username`'s failures (after a good sign-in); the address keeps its own."""
        LoginFailure.delete().where(LoginFailure.username == username[:191]).execute()


def end_all(name: str, source: str) -> int:
    """End every session of `name` signed in through `source` (an account removed)."""
    return WebSession.delete().where(WebSession.name == name, WebSession.source == source).execute()
