"""CSV input for `send csv`: rows checked one by one, problems reported by line number.

Columns userid, email, firstname, lastname are required (any case, any order); every
other column becomes a template variable. A file that cannot be used at all raises
Aborted; a bad row is collected as a CsvProblem and never stops the others being read.
A row repeated exactly (an export pasted twice) is merged into the first and noted;
a userid given again with another address or other values is a problem naming both lines.
"""

import csv
import io
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import email_validator
from email_validator import EmailNotValidError
from email_validator import validate_email as _validate

from sidecar.errors import Aborted

REQUIRED = ("userid", "email", "firstname", "lastname")


@dataclass(frozen=True)
class CsvRow:
    line: int
    userid: int
    email: str
    firstname: str
    lastname: str
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CsvProblem:
    line: int
    message: str


@dataclass(frozen=True)
class CsvInput:
    rows: tuple[CsvRow, ...]
    problems: tuple[CsvProblem, ...]
    columns: tuple[str, ...]
    merged: tuple[CsvProblem, ...] = ()  # notes on repeated rows merged into the first

    @property
    def extra_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c not in REQUIRED)


# Moodle's validate_email() is a syntax check: learners on an internal or reserved domain
# (jane@corp.local, learner1@example.test, x@intranet.internal: Active Directory and staging
# sites) are mailed, and the site's relay decides what it can deliver. email-validator refuses
# special-use domains whatever its options; emptying its list is the way its README gives.
# `.invalid` stays refused (below): Moodle's email_to_user() never mails it either.
email_validator.SPECIAL_USE_DOMAIN_NAMES.clear()


@lru_cache(maxsize=65536)
def validate_email(address: str) -> str:
    """The normalised address, or ValueError saying why it is not one (no DNS lookups).

    Accepts every address Moodle's validate_email() accepts, on any domain, plus
    internationalised domains; an IDN domain comes back in its ASCII (xn--) form, which every
    relay and SES can carry. Non-ASCII before the @ is refused: Moodle's validate_email()
    refuses it (so email_to_user() never mails it), SES cannot carry it and a relay without
    SMTPUTF8 fails it.
    """
    try:
        info = _validate(
            address,
            check_deliverability=False,
            globally_deliverable=False,
            allow_quoted_local=True,
            allow_domain_literal=True,
        )
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    if info.smtputf8:
        found = "".join(sorted({c for c in info.local_part if not c.isascii()}))
        raise ValueError(
            f"non-ASCII characters before the @ ({found}): Moodle does not mail such an "
            "address and SES and most relays cannot carry it (an internationalised domain "
            "after the @ is fine)"
        )
    if info.ascii_domain == "invalid" or info.ascii_domain.endswith(".invalid"):
        raise ValueError("the domain .invalid is reserved for addresses that must not be mailed")
    return info.ascii_email or info.normalized


def read_csv(path: Path) -> CsvInput:
    """Read and check a whole file. Raises Aborted for a file that cannot be used."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise Aborted(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise Aborted(f"{path}: line {line} is not UTF-8: save the file as UTF-8 CSV") from None
    sample = text[:4096]
    delimiter = (
        ";" if sample.split("\n", 1)[0].count(";") > sample.split("\n", 1)[0].count(",") else ","
    )
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(reader, None)
    while header is not None and not any(h.strip() for h in header):
        header = next(reader, None)
    if header is None:
        raise Aborted(f"{path}: the file is empty: the first line must name the columns")
    columns = tuple(h.strip().lower() for h in header)
    for name in REQUIRED:
        if name not in columns:
            raise Aborted(
                f"{path}: the column '{name}' is missing "
                f"(required: {', '.join(REQUIRED)}; found: {', '.join(columns)})"
            )
    for name in columns:
        if not name.isidentifier():
            raise Aborted(
                f"{path}: column '{name}' cannot be a template variable: use letters, digits and _"
            )
    dupes = {c for c in columns if columns.count(c) > 1}
    if dupes:
        raise Aborted(f"{path}: column '{sorted(dupes)[0]}' appears twice")
    index = {c: i for i, c in enumerate(columns)}
    rows: list[CsvRow] = []
    problems: list[CsvProblem] = []
    merged: list[CsvProblem] = []
    first_row: dict[int, CsvRow] = {}
    start = 2
    for record in reader:
        line = start
        start = reader.line_num + 1
        if not any(f.strip() for f in record):
            continue
        if len(record) != len(columns):
            problems.append(
                CsvProblem(
                    line, f"line {line}: expected {len(columns)} columns, found {len(record)}"
                )
            )
            continue
        values = [f.strip() for f in record]
        uid_text = values[index["userid"]]
        if not uid_text.isdigit() or int(uid_text) <= 0:
            problems.append(
                CsvProblem(line, f"line {line}: userid '{uid_text}' is not a positive integer")
            )
            continue
        userid = int(uid_text)
        address = values[index["email"]]
        try:
            email = validate_email(address)
        except ValueError as exc:
            problems.append(
                CsvProblem(line, f"line {line}: email '{address}' is not a valid address: {exc}")
            )
            continue
        extra = {c: values[i] for c, i in index.items() if c not in REQUIRED}
        row = CsvRow(
            line, userid, email, values[index["firstname"]], values[index["lastname"]], extra
        )
        first = first_row.get(userid)
        if first is None:
            first_row[userid] = row
            rows.append(row)
        elif (message := _repeat(first, row)) is None:
            merged.append(
                CsvProblem(
                    line,
                    f"line {line} repeats line {first.line} (userid {userid}): merged, sent once",
                )
            )
        else:
            problems.append(CsvProblem(line, message))
    return CsvInput(tuple(rows), tuple(problems), columns, tuple(merged))


def _repeat(first: CsvRow, row: CsvRow) -> str | None:
    """None when `row` repeats `first` exactly; else the problem naming both lines."""
    head = f"line {row.line}: userid {row.userid} already given on line {first.line}"
    if first.email.lower() != row.email.lower():
        return (
            f"{head} with another address ('{first.email}' on line {first.line}, "
            f"'{row.email}' on line {row.line})"
        )
    differ = [
        name for name in ("firstname", "lastname") if getattr(first, name) != getattr(row, name)
    ] + [name for name in first.extra if first.extra[name] != row.extra[name]]
    if differ:
        return f"{head} with another {', '.join(differ)}: keep one of the two rows"
    return None
