"""Query parameters of the JSON API: opaque cursors, `limit`, and typed filters. Every bad
value raises BadRequest naming the parameter and what it takes.

A cursor is the key of the last row of a page (`sidecar.ledgerview.Page.next_key`) with
the name of the list it belongs to, as base64url JSON. It is opaque to clients: they
pass back what they got. A cursor of another list, or one that was altered, is 400.
"""

import base64
import binascii
import json
from datetime import datetime, time

from werkzeug.datastructures import MultiDict

from sidecar.web.errors import BadRequest

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
_MAX_CURSOR = 512


def encode_cursor(kind: str, key: tuple | None) -> str | None:
    if key is None:
        return None
    raw = json.dumps([kind, *key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(args: MultiDict, kind: str, types: tuple[type, ...]) -> tuple | None:
    """The key in `cursor` (None when absent); BadRequest unless it is a cursor of `kind`
    whose parts have `types`."""
    text = args.get("cursor")
    if text is None or text == "":
        return None
    bad = BadRequest("cursor: not a cursor of this list; pass back the next_cursor you got")
    if len(text) > _MAX_CURSOR:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(value, list) or len(value) != len(types) + 1 or value[0] != kind:
        raise bad
    key = tuple(value[1:])
    for part, typ in zip(key, types, strict=True):
        if type(part) is not typ or (typ is int and not -(2**63) <= part < 2**63):
            raise bad
    if types and types[0] is str:  # every string-led key starts with a time
        try:
            datetime.fromisoformat(key[0])
        except ValueError:
            raise bad from None
    return key


def limit_of(args: MultiDict) -> int:
    """`limit`: 1 to MAX_LIMIT, DEFAULT_LIMIT when absent."""
    text = args.get("limit")
    if text is None or text == "":
        return DEFAULT_LIMIT
    value = int_of(args, "limit")
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"limit: must be 1 to {MAX_LIMIT}, got {value}")
    return value


def int_of(args: MultiDict, name: str) -> int | None:
    text = args.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text.strip())
    except ValueError:
        raise BadRequest(f"{name}: must be a whole number, got {text[:40]!r}") from None
    if not -(2**63) <= value < 2**63:
        raise BadRequest(f"{name}: out of range")
    return value


def choice_of(args: MultiDict, name: str, allowed) -> str | None:
    text = args.get(name)
    if text is None or text == "":
        return None
    if text not in allowed:
        raise BadRequest(f"{name}: must be one of {', '.join(sorted(allowed))}, got {text[:40]!r}")
    return text


def choices_of(args: MultiDict, name: str, allowed) -> list[str]:
    """Every value of `name`, repeated or comma-separated, each one of `allowed`."""
    out: list[str] = []
    for text in args.getlist(name):
        for part in filter(None, (p.strip() for p in text.split(","))):
            if part not in allowed:
                raise BadRequest(
                    f"{name}: must be one of {', '.join(sorted(allowed))}, got {part[:40]!r}"
                )
            out.append(part)
    return out


def text_of(args: MultiDict, name: str, max_len: int) -> str | None:
    text = args.get(name)
    if text is None or text.strip() == "":
        return None
    if len(text) > max_len:
        raise BadRequest(f"{name}: at most {max_len} characters")
    return text.strip()


def time_of(args: MultiDict, name: str) -> datetime | None:
    """An ISO 8601 date or date-time, as naive UTC (an offset is converted; none is UTC)."""
    text = args.get(name)
    if text is None or text == "":
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"{name}: must be an ISO 8601 date or date-time (2025-11-18 or "
            f"2025-11-18T09:00:00Z), got {text[:40]!r}"
        ) from None
    if value.tzinfo is not None:
        from datetime import UTC

        value = value.astimezone(UTC).replace(tzinfo=None)
    if len(text.strip()) == 10:  # a date: its midnight
        value = datetime.combine(value.date(), time())
    return value


def known(args: MultiDict, allowed: set[str]) -> None:
    """BadRequest naming a parameter this endpoint does not take (a typo filters nothing)."""
    for name in args:
        if name not in allowed:
            raise BadRequest(f"{name}: unknown parameter; this endpoint takes "
                             f"{', '.join(sorted(allowed)) or 'none'}")  # fmt: skip
