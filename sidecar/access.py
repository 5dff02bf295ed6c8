"""Who may use the dashboard and the JSON API: local accounts, API tokens, `Principal`.

Local accounts (`moodle-offload admin add`) are for sites where Moodle's login/token.php
is off; their passwords are scrypt hashes (sidecar.passwords). An API token is shown once
at creation; only its SHA-256 is stored (a 256-bit random token needs no slow hash), so
a copy of the database signs nobody in. Every change is an audit line; no secret is.
"""

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache

from peewee import IntegrityError

from sidecar import passwords
from sidecar.db import store
from sidecar.db.models import AdminAccount, ApiToken
from sidecar.errors import Conflict, NotFound

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
TOKEN_PREFIX = "mo_"
#: a token's last-use time is written at most this often (seconds): no write per request
_TOUCH_EVERY = 60


@dataclass(frozen=True)
class Principal:
    """Who a request acts for. `kind`: "session" (signed in) or "token" (bearer).
    `is_admin`: sees every company; otherwise only `companies`."""

    name: str
    kind: str
    is_admin: bool
    companies: tuple[int, ...] = field(default=())
    read_only: bool = False
    source: str = ""  # local | moodle | token

    def as_json(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "source": self.source,
            "is_admin": self.is_admin,
            "companies": list(self.companies),
            "read_only": self.read_only,
        }


def check_name(name: str, what: str = "an account") -> str:
    """`name` when usable; raises ValueError saying which characters are allowed."""
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} cannot name {what}: 1-64 letters, digits, and _ . @ - "
            "(starting with a letter or digit)"
        )
    return name


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- local accounts ------------------------------------------------------------------------


def add_account(name: str, password: str, now: datetime) -> None:
    """Create local account `name`. Raises ValueError (bad name or weak password) or
    Conflict (the name is taken)."""
    check_name(name)
    passwords.check_strength(password)
    digest = passwords.hash_password(password)
    try:
        AdminAccount.create(name=name, password_hash=digest, created_at=now, updated_at=now)
    except IntegrityError:
        raise Conflict(
            f"account {name} exists: remove it first (`moodle-offload admin remove {name}`)"
        ) from None
    store.audit("admin_added", now, name=name)


def remove_account(name: str, now: datetime) -> None:
    """Delete local account `name` and sign it out everywhere; raises NotFound."""
    from sidecar import sessions

    if not AdminAccount.delete().where(AdminAccount.name == name).execute():
        raise NotFound(f"no local account {name}: see `moodle-offload admin list`")
    sessions.end_all(name, "local")
    store.audit("admin_removed", now, name=name)


def list_accounts() -> list[AdminAccount]:
    return list(AdminAccount.select().order_by(AdminAccount.name))


def verify_account(name: str, password: str) -> bool:
    """Whether `name` is a local account and `password` its password. An unknown name
    costs the same scrypt time as a known one, so timing does not tell which exist."""
    row = AdminAccount.get_or_none(AdminAccount.name == name)
    if row is None:
        passwords.verify_password(password, _dummy_hash())
        return False
    return passwords.verify_password(password, row.password_hash)


@cache
def _dummy_hash() -> str:
    return passwords.hash_password(secrets.token_urlsafe(16))


# --- API tokens ----------------------------------------------------------------------------


def create_token(name: str, now: datetime, *, company: int | None, read_only: bool) -> str:
    """Create API token `name` and return it (the only time it is seen). Raises
    ValueError (bad name) or Conflict (the name is taken)."""
    check_name(name, "a token")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    try:
        ApiToken.create(
            name=name,
            token_hash=_sha256(token),
            company_id=company,
            read_only=read_only,
            created_at=now,
        )
    except IntegrityError:
        raise Conflict(
            f"token {name} exists: revoke it first (`moodle-offload token revoke {name}`)"
        ) from None
    store.audit("token_created", now, name=name, company=company, read_only=read_only)
    return token


def revoke_token(name: str, now: datetime) -> None:
    """Delete API token `name`: requests bearing it are refused from now on; raises NotFound."""
    if not ApiToken.delete().where(ApiToken.name == name).execute():
        raise NotFound(f"no API token {name}: see `moodle-offload token list`")
    store.audit("token_revoked", now, name=name)


def list_tokens() -> list[ApiToken]:
    return list(ApiToken.select().order_by(ApiToken.name))


def token_principal(token: str, now: datetime) -> Principal | None:
    """The principal of a bearer token; None when unknown or revoked."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = ApiToken.get_or_none(ApiToken.token_hash == _sha256(token))
    if row is None:
        return None
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() >= _TOUCH_EVERY:
        ApiToken.update(last_used_at=now).where(ApiToken.name == row.name).execute()
    companies = () if row.company_id is None else (row.company_id,)
    return Principal(
        name=row.name,
        kind="token",
        is_admin=row.company_id is None,
        companies=companies,
        read_only=row.read_only,
        source="token",
    )
