"""Parameters → Moodle REST form fields (PHP bracket keys), and option lists.

Moodle reads only `$_GET`/`$_POST`, so nested values become `users[0][id]=5`. Its
validation is strict: booleans must be "0"/"1", integers canonical. An empty list cannot
be expressed in a form at all, so it is left out (a list with a default, such as
`options`, then takes its default); `None` means "not given" and is left out too.
"""

from collections.abc import Iterable, Mapping
from typing import Any

RESERVED = ("wstoken", "wsfunction", "moodlewsrestformat")


def scalar(value: Any) -> str:
    """One value as Moodle's validation accepts it."""
    if isinstance(value, bool):  # before int: bool is an int
        return "1" if value else "0"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} cannot be sent to Moodle")
        return repr(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"cannot encode {type(value).__name__} for Moodle: {value!r}")


def encode(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Flatten nested dicts and lists into (bracket key, string) pairs, in order."""
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        _flatten(str(key), value, out)
    return out


def _flatten(prefix: str, value: Any, out: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}[{k}]", v, out)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    else:
        out.append((prefix, scalar(value)))


def options(**values: Any) -> list[dict[str, str]]:
    """A name/value option list (`options[i][name|value]`), leaving out None values.

    Option values are PARAM_RAW and read with PHP `!empty()`: "false" would be *true*,
    so booleans are sent as "1"/"0".
    """
    return [{"name": k, "value": scalar(v)} for k, v in values.items() if v is not None]


def criteria(pairs: Iterable[tuple[str, Any]]) -> list[dict[str, str]]:
    """A key/value criteria list (`criteria[i][key|value]`)."""
    return [{"key": k, "value": scalar(v)} for k, v in pairs]


def count_fields(params: Mapping[str, Any]) -> int:
    """How many form variables `params` becomes (PHP's max_input_vars counts these)."""
    return len(encode(params))
