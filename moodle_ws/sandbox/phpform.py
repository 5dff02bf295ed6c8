"""Request variables as PHP builds `$_GET` / `$_POST`: bracket keys, max_input_vars, merge.

`users[0][id]=5` becomes {'users': {0: {'id': '5'}}}; `values[]` appends; canonical
integer keys become ints, as in a PHP array; indices keep the order received. Only the
first `max_input_vars` variables of each source are read; PHP drops the rest silently.
"""

import re
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

MAX_NESTING = 64  # PHP max_input_nesting_level
_INT_KEY = re.compile(r"-?[1-9][0-9]{0,18}\Z|0\Z")


def php_key(key: str) -> str | int:
    """A PHP array key: canonical decimal strings become ints."""
    if _INT_KEY.match(key):
        n = int(key)
        if -(2**63) <= n < 2**63:
            return n
    return key


def _next_index(array: dict) -> int:
    ints = [k for k in array if isinstance(k, int)]
    return max(ints) + 1 if ints else 0


def register(array: dict, name: str, value: str) -> None:
    """`php_register_variable_ex`: store one variable, following PHP's name rules."""
    name = name.lstrip(" ")
    bracket = name.find("[")
    # Spaces and dots become '_' in the part before the first '['.
    base = (name if bracket < 0 else name[:bracket]).replace(" ", "_").replace(".", "_")
    indices: list[str] = []
    pos = bracket
    while 0 <= pos < len(name) and name[pos] == "[":
        close = name.find("]", pos + 1)
        if close < 0:
            if not indices:  # an unmatched first '[' is not an index: it becomes '_'
                base = base + "_" + name[bracket + 1 :]
            break
        indices.append(name[pos + 1 : close])
        pos = close + 1  # anything after the last ']' that is not '[' is ignored
    if not base or len(indices) >= MAX_NESTING:
        return
    node = array
    keys = [base, *indices]
    for depth, raw in enumerate(keys):
        key: str | int = _next_index(node) if (raw == "" and depth > 0) else php_key(raw)
        if depth == len(keys) - 1:
            node[key] = value
            return
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child


def _decode(part: bytes) -> str:
    return unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8", "replace")


def parse_urlencoded(data: bytes, max_vars: int) -> dict:
    """A query string or form body into a PHP array, reading at most `max_vars` variables."""
    array: dict = {}
    count = 0
    for part in data.split(b"&"):
        if not part:
            continue
        count += 1
        if count > max_vars:
            break
        name, _, value = part.partition(b"=")
        register(array, _decode(name), _decode(value))
    return array


def parse_pairs(pairs: Iterable[tuple[str, str]], max_vars: int) -> dict:
    """Already-decoded (name, value) pairs (multipart fields) into a PHP array."""
    array: dict = {}
    for count, (name, value) in enumerate(pairs, 1):
        if count > max_vars:
            break
        register(array, name, value)
    return array


def array_merge(*arrays: dict) -> dict:
    """PHP `array_merge()`: later string keys win, integer keys are renumbered."""
    out: dict = {}
    nxt = 0
    for array in arrays:
        for key, value in array.items():
            if isinstance(key, int):
                out[nxt] = value
                nxt += 1
            else:
                out[key] = value
    return out
