"""`send welcome`: who is welcomed (new users in Moodle, or the users named), the preview,
the job.

A user is welcomed once, whatever the source and however often the tool runs: the job
holds each user under the idempotency key `welcome` (so the key is per user,
`welcome:{userid}`). Passwords are not made here: the delivery makes, sets and mails them
(sidecar/welcomepasswords.py), so a preview or a job waiting in the ledger holds none.
"""

import csv
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from moodle_ws import companion, functions
from moodle_ws.accounts import accounts_by_id
from moodle_ws.client import MoodleClient, RequestTally
from moodle_ws.errors import FunctionNotInService, FunctionNotInstalled
from moodle_ws.types import NewUser
from sidecar import jobs
from sidecar.config import Config, _seconds
from sidecar.csvinput import validate_email
from sidecar.db import store
from sidecar.errors import Aborted, MoodleLacks
from sidecar.render import RenderedEmail, Renderer, learner_vars
from sidecar.temppasswords import PLACEHOLDER
from sidecar.welcomepasswords import JOB_TYPE, welcome_vars

log = logging.getLogger(__name__)

KEY = "welcome"  # with the user id: welcome:{userid}
PASSWORD_AUTHS = frozenset({"manual", "email"})  # auth plugins whose password Moodle keeps
SERVICES_PAGE = "Site administration > Server > Web services > External services"
ROUTE_REASON = (
    "welcome emails carry temporary passwords: they are rendered and sent here, never "
    "handed to a cloud worker"
)


@dataclass(frozen=True)
class Source:
    since: datetime | None = None  # naive UTC
    since_text: str = ""
    companyid: int | None = None
    userids: tuple[int, ...] = ()
    csv: Path | None = None

    def label(self) -> str:
        if self.csv is not None:
            return f"csv:{self.csv.name}"
        if self.userids:
            return "users"
        return f"new since {self.since_text}"


@dataclass
class WelcomePreview:
    source: Source
    recipients: list[NewUser]
    excluded: dict[str, list[int]]  # reason -> user ids
    site: dict[str, str]
    sample: RenderedEmail | None
    requests: int
    route_reason: str = f"local: {ROUTE_REASON}"
    notes: list[str] = field(default_factory=list)

    @property
    def with_password(self) -> int:
        return sum(u.auth in PASSWORD_AUTHS for u in self.recipients)

    @property
    def without_password(self) -> int:
        return len(self.recipients) - self.with_password


def parse_since(text: str, now: datetime) -> datetime:
    """`24h`, `2d`, `90m` (before now) or a date / date-time (UTC); raises Aborted."""
    value = text.strip()
    if re.fullmatch(r"[0-9smhd.\s]+", value):
        try:
            return now - timedelta(seconds=_seconds(value))
        except ValueError:
            pass
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise Aborted(
            f"--since {text!r}: give a duration (24h, 2d, 90m) or a date (2025-11-18)"
        ) from None
    return when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when


def read_userids(path: Path) -> list[int]:
    """The `userid` column of a CSV (other columns ignored); raises Aborted naming every
    bad line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise Aborted(f"{path}: cannot read: {exc}") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip().lower() for h in next(reader, [])]
    if "userid" not in header:
        raise Aborted(f"{path}: no userid column (the header is line 1)")
    col = header.index("userid")
    ids: list[int] = []
    bad: list[str] = []
    for row in reader:
        line = reader.line_num
        if not any(c.strip() for c in row):
            continue
        value = row[col].strip() if col < len(row) else ""
        if not value.isdigit() or int(value) < 1:
            bad.append(f"line {line}: userid {value!r} is not a user id")
        else:
            ids.append(int(value))
    if bad:
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise Aborted(f"{path}: {len(bad)} bad rows, nothing done: " + "; ".join(bad[:5]) + more)
    if not ids:
        raise Aborted(f"{path}: no user ids")
    return ids


def find_users(
    client: MoodleClient, source: Source, prefix: str, tally: RequestTally
) -> tuple[list[NewUser], list[int]]:
    """The users the source names, and the ids Moodle did not give (missing or hidden)."""
    if source.since is not None and not (source.userids or source.csv):
        since = int(source.since.replace(tzinfo=UTC).timestamp())
        try:
            users = companion.get_new_users(
                client, since, source.companyid or 0, prefix, tally=tally
            )
        except (FunctionNotInService, FunctionNotInstalled):
            raise MoodleLacks(
                f"{prefix}_get_new_users is not in the token's service, so new users cannot be "
                f"found: add it under {SERVICES_PAGE} (docs/moodle.md), or name the users "
                "with --users ID,... or --csv FILE"
            ) from None
        return users, []
    ids = list(source.userids) or read_userids(source.csv)  # type: ignore[arg-type]
    return lookup(client, ids, tally)


def lookup(
    client: MoodleClient, ids: Sequence[int], tally: RequestTally
) -> tuple[list[NewUser], list[int]]:
    """Accounts by id (core_user_get_users_by_field, 500 a request)."""
    found = accounts_by_id(client, ids, tally=tally)
    users = [
        NewUser(
            id=u.id,
            username=u.username or "",
            firstname=u.firstname or "",
            lastname=u.lastname or "",
            email=u.email or "",
            auth=u.auth or "manual",
            suspended=bool(u.suspended),
            timecreated=0,
        )  # fmt: skip
        for u in found.users.values()
        if u.confirmed is not False
    ]
    known = {u.id for u in users}
    missing = sorted({int(i) for i in ids} - known)
    return sorted(users, key=lambda u: u.id), missing


def exclude(users: Sequence[NewUser], missing: Sequence[int]) -> tuple[list[NewUser], dict]:
    """Who is welcomed, and who is not, by reason."""
    excluded: dict[str, list[int]] = {}
    if missing:
        excluded["not found in Moodle (deleted, unconfirmed or hidden)"] = list(missing)
    keep: list[NewUser] = []
    seen: set[int] = set()
    for u in users:
        why = None
        if u.id in seen:
            continue
        seen.add(u.id)
        if u.suspended:
            why = "suspended account"
        elif u.auth == "nologin":
            why = "nologin account (cannot sign in)"
        else:
            try:
                validate_email(u.email)
            except ValueError:
                why = "invalid address"
        if why:
            excluded.setdefault(why, []).append(u.id)
        else:
            keep.append(u)
    taken = store.taken_send_keys(KEY, [u.id for u in keep])
    if taken:
        excluded["already welcomed"] = sorted(taken)
        keep = [u for u in keep if u.id not in taken]
    held = jobs.held_back(JOB_TYPE, False, [_recipient(u) for u in keep])
    for uid, why in held.items():
        excluded.setdefault(why, []).append(uid)
    return [u for u in keep if u.id not in held], excluded


def _recipient(u: NewUser) -> jobs.RecipientIn:
    return jobs.RecipientIn(
        userid=u.id,
        email=u.email,
        firstname=u.firstname,
        lastname=u.lastname,
        vars=welcome_vars(u.username, u.auth in PASSWORD_AUTHS, u.auth),
    )


def site_vars(client: MoodleClient, tally: RequestTally) -> dict[str, str]:
    """The `site` template variable; raises Aborted when the token's service cannot set
    passwords (core_user_update_users), before anything is committed."""
    tally.add()
    info = functions.site_info(client)
    if not info.has("core_user_update_users"):
        raise MoodleLacks(
            "core_user_update_users is not in the token's service, so temporary passwords "
            f"cannot be set: add it under {SERVICES_PAGE} (docs/moodle.md)"
        )
    return {"name": info.sitename, "url": info.siteurl}


def sample(renderer: Renderer, site: dict, user: NewUser, today: str) -> RenderedEmail:
    """One recipient's email, with a placeholder where the password goes."""
    ctx = {"site": site, "username": user.username, "today": today}
    ctx.update(learner_vars(user.id, user.email, user.firstname, user.lastname))
    ctx["temporary_password"] = PLACEHOLDER if user.auth in PASSWORD_AUTHS else ""
    return renderer.preview("welcome", ctx)


def preview(
    config: Config, client: MoodleClient, renderer: Renderer, source: Source, now: datetime
) -> WelcomePreview:
    """Find the users, set aside those not welcomed (and why), render one sample."""
    if config.moodle is None:
        raise Aborted("send welcome needs [moodle] (url and token) in the config")
    tally = RequestTally()
    site = site_vars(client, tally)
    users, missing = find_users(client, source, config.moodle.companion_prefix, tally)
    keep, excluded = exclude(users, missing)
    first = sample(renderer, site, _example(keep), now.date().isoformat()) if keep else None
    return WelcomePreview(source, keep, excluded, site, first, tally.count)


def _example(users: Sequence[NewUser]) -> NewUser:
    """The sample's user: the first who gets a password (the email that matters most)."""
    return next((u for u in users if u.auth in PASSWORD_AUTHS), users[0])


def preview_of(
    users: Sequence[NewUser], site: dict, renderer: Renderer, source: Source, now: datetime,
    requests: int,
) -> WelcomePreview:  # fmt: skip
    """The preview of users already in hand (`users import` has just created them)."""
    keep, excluded = exclude(users, [])
    first = sample(renderer, site, _example(keep), now.date().isoformat()) if keep else None
    return WelcomePreview(source, keep, excluded, site, first, requests)


def commit(pv: WelcomePreview, *, batch_size: int, sender: str, now: datetime) -> jobs.Created:
    """The welcome job; users welcomed meanwhile by another job are skipped (the key)."""
    if not pv.recipients:
        raise Aborted("nobody to welcome")
    spec = jobs.JobSpec(
        type=JOB_TYPE,
        template_id="welcome",
        source=pv.source.label()[:32],
        idempotency_key=KEY,
        route="local",
        route_reason=pv.route_reason,
        tenant_id=pv.source.companyid,
        sender=sender,
        template_data={"site": pv.site},
    )
    return jobs.create_job(
        spec, [_recipient(u) for u in pv.recipients], batch_size=batch_size, now=now
    )
