"""`users import FILE`: create the accounts of a CSV in Moodle, then welcome them.

The whole file is checked first, every bad row named by its line: nothing is created until
it is clean. Accounts whose username already exists in Moodle (an earlier run of the same
file) are not created again but are welcomed, unless already welcomed, so a run stopped
half way is finished by running it again.

An account is created with a random password that is never stored nor shown (Moodle's
`createpassword` would mail one through its cron, which is what this replaces); the
welcome then sets the temporary password the learner gets, right before it is mailed.
"""

import csv
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from moodle_ws import functions, iomad
from moodle_ws.client import MoodleClient, RequestTally
from moodle_ws.errors import FunctionNotInService
from sidecar import welcome
from sidecar.config import PasswordPolicyConfig
from sidecar.csvinput import validate_email
from sidecar.errors import Aborted
from sidecar.temppasswords import generate

log = logging.getLogger(__name__)

REQUIRED = ("username", "email", "firstname", "lastname")
OPTIONAL = ("auth", "idnumber", "institution", "department", "city", "country", "lang")
CREATE_CHUNK = 100
MAX_PROBLEMS_SHOWN = 20
_USERNAME = re.compile(r"[a-z0-9_.@-]+")  # PARAM_USERNAME without extendedusernamechars
_AUTH = re.compile(r"[a-z0-9_]+")


@dataclass(frozen=True)
class ImportRow:
    line: int
    username: str
    email: str
    firstname: str
    lastname: str
    extra: dict[str, str] = field(default_factory=dict)  # auth and the optional fields

    @property
    def auth(self) -> str:
        return self.extra.get("auth") or "manual"


@dataclass
class ImportPlan:
    rows: list[ImportRow]
    to_create: list[ImportRow]
    existing: dict[str, int]  # username -> id of accounts already in Moodle
    companyid: int | None
    requests: int = 0
    created: dict[str, int] = field(default_factory=dict)  # username -> new id
    not_assigned: dict[int, str] = field(default_factory=dict)


def read_file(path: Path) -> list[ImportRow]:
    """Every row, checked; raises Aborted listing the bad rows by line (nothing is used)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise Aborted(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise Aborted(f"{path}: not UTF-8: save the file as UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise Aborted(
            f"{path}: line 1: the columns {', '.join(missing)} are missing "
            f"(required: {', '.join(REQUIRED)}; optional: {', '.join(OPTIONAL)})"
        )
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise Aborted(f"{path}: line 1: unknown columns {', '.join(unknown)}")
    rows: list[ImportRow] = []
    problems: list[str] = []
    usernames: dict[str, int] = {}
    emails: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        if not any(f.strip() for f in record):
            continue
        if len(record) != len(header):
            problems.append(f"line {line}: expected {len(header)} columns, found {len(record)}")
            continue
        values = dict(zip(header, (f.strip() for f in record), strict=True))
        problem = _check(values)
        if problem:
            problems.append(f"line {line}: {problem}")
            continue
        name, address = values["username"], values["email"]
        if name in usernames:
            problems.append(f"line {line}: username {name} is already on line {usernames[name]}")
            continue
        email = validate_email(address)
        if email.lower() in emails:
            problems.append(
                f"line {line}: email {address} is already on line {emails[email.lower()]}"
            )
            continue
        usernames[name], emails[email.lower()] = line, line
        extra = {k: values[k] for k in OPTIONAL if values.get(k)}
        rows.append(ImportRow(line, name, email, values["firstname"], values["lastname"], extra))
    if problems:
        more = len(problems) - MAX_PROBLEMS_SHOWN
        raise Aborted(
            f"{path}: {len(problems)} bad rows, no account created; fix them and run again: "
            + "; ".join(problems[:MAX_PROBLEMS_SHOWN])
            + (f" (+{more} more)" if more > 0 else "")
        )
    if not rows:
        raise Aborted(f"{path}: no rows")
    return rows


def _check(values: dict[str, str]) -> str | None:
    name = values["username"]
    if not name:
        return "username is empty"
    if name != name.lower():
        return f"username {name} must be lower case"
    if not _USERNAME.fullmatch(name):
        return f"username {name} may hold only a-z, 0-9, _ - . @"
    for col in ("firstname", "lastname"):
        if not values[col]:
            return f"{col} is empty"
    try:
        validate_email(values["email"])
    except ValueError as exc:
        return f"email {values['email']!r} is not a valid address: {exc}"
    auth = values.get("auth") or "manual"
    if not _AUTH.fullmatch(auth):
        return f"auth {auth!r} is not an authentication plugin name"
    return None


def plan(client: MoodleClient, rows: list[ImportRow], companyid: int | None) -> ImportPlan:
    """Which accounts exist already (by username) and which to create; raises Aborted when
    an address belongs to another account or the company does not exist."""
    tally = RequestTally()
    welcome.site_vars(client, tally)  # the service can set passwords, or nothing is created
    names = [r.username for r in rows]
    existing = {
        u.username: u.id
        for u in functions.users_by_field(client, "username", names, tally=tally)
        if u.username
    }
    fresh = [r for r in rows if r.username not in existing]
    taken = {
        (u.email or "").lower(): u
        for u in functions.users_by_field(client, "email", [r.email for r in fresh], tally=tally)
    }
    clashes = [
        f"line {r.line}: email {r.email} belongs to user {taken[r.email.lower()].id} "
        f"({taken[r.email.lower()].username})"
        for r in fresh
        if r.email.lower() in taken
    ]
    if clashes:
        raise Aborted(
            f"{len(clashes)} addresses are already used in Moodle, no account created: "
            + "; ".join(clashes[:MAX_PROBLEMS_SHOWN])
        )
    if companyid is not None:
        tally.add()
        if not iomad.companies(client, id=companyid):
            raise Aborted(f"--company {companyid}: no such IOMAD company")
    return ImportPlan(rows, fresh, existing, companyid, tally.count)


def print_plan(p: ImportPlan, echo: Callable[[str], None]) -> None:
    echo(
        f"users import: {len(p.rows)} rows, {len(p.to_create)} accounts to create, "
        f"{len(p.existing)} already in Moodle (welcomed if not yet)"
        + (f", into company {p.companyid}" if p.companyid is not None else "")
    )


def create(
    client: MoodleClient,
    p: ImportPlan,
    policy: PasswordPolicyConfig,
    progress: Callable[[int], None] | None = None,
) -> dict[str, int]:
    """Create the accounts, CREATE_CHUNK a request (each all or nothing in Moodle), then put
    them in the company. A refused request raises after the earlier ones were created: run
    the file again to finish (those are then found by username)."""
    tally = RequestTally()
    for start in range(0, len(p.to_create), CREATE_CHUNK):
        chunk = p.to_create[start : start + CREATE_CHUNK]
        users = []
        for r in chunk:
            data = {"username": r.username, "firstname": r.firstname, "lastname": r.lastname,
                    "email": r.email, "auth": r.auth, **{k: v for k, v in r.extra.items()
                                                         if k != "auth"}}  # fmt: skip
            if r.auth in welcome.PASSWORD_AUTHS:
                data["password"] = generate(policy)  # replaced by the welcome's, never kept
            users.append(data)
        try:
            made = functions.create_users(client, users, tally=tally)
        finally:
            p.requests += tally.count
            tally.count = 0
        p.created.update((name, uid) for uid, name in made)
        if progress:
            progress(len(p.created))
    log.info("users import: %d accounts created", len(p.created))
    if p.companyid is not None and p.created:
        try:
            p.not_assigned = iomad.assign_users(
                client, p.created.values(), p.companyid, tally=tally
            )
        except FunctionNotInService:
            raise Aborted(
                "block_iomad_company_admin_assign_users is not in the token's service: the "
                f"{len(p.created)} accounts were created but not put in company "
                f"{p.companyid}; add the function and assign them, then run the file again "
                "to welcome them"
            ) from None
        finally:
            p.requests += tally.count
    return p.created


def welcome_preview(rt, client: MoodleClient, p: ImportPlan, path: Path):
    """The welcome of the file's accounts (created now or before), as `send welcome` shows it."""
    ids = sorted({**p.existing, **p.created}.values())
    source = welcome.Source(csv=path, companyid=p.companyid)
    tally = RequestTally()
    site = welcome.site_vars(client, tally)
    users, missing = welcome.lookup(client, ids, tally)
    pv = welcome.preview_of(users, site, rt.renderer, source, rt.clock(), tally.count)
    if missing:
        pv.excluded["not found in Moodle (deleted, unconfirmed or hidden)"] = missing
    if p.not_assigned:
        pv.notes.append(
            f"{len(p.not_assigned)} accounts not put in company {p.companyid}: "
            + "; ".join(f"user {u}: {m}" for u, m in sorted(p.not_assigned.items())[:5])
        )
    return pv
