"""Moodle's `external_api::validate_parameters` and `clean_returnvalue`, generic over nodes.

PHP arrays arrive as dicts (from the form parser or JSON) or lists (defaults, function
results); both are accepted wherever PHP accepts an array. Error texts and the
`key => ...` path prefixes are Moodle's, so debuginfo matches a real site.
"""

import re
from collections.abc import Callable
from typing import Any

from moodle_ws.sandbox.exceptions import InvalidParameter, InvalidResponse
from moodle_ws.sandbox.phpvalue import clean_param, is_numeric, php_str, php_type
from moodle_ws.sandbox.spec import DEFAULT, REQUIRED, Multiple, Node, Single, Value


def _as_array(value: Any) -> dict | None:
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        return dict(enumerate(value))
    return None


def _print_r(value: Any) -> str:
    return php_str(value)


def _is_bool_like(v: Any) -> bool:
    # PHP: is_bool($v) or $v === 0 or $v === 1 or $v === '0' or $v === '1'
    return (
        type(v) is bool or (type(v) is int and v in (0, 1)) or (type(v) is str and v in ("0", "1"))
    )


def validate_param(value: Any, ptype: str, allownull: bool, debuginfo: str) -> Any:
    """Moodle `validate_param()`: the value must survive cleaning unchanged.

    Raises InvalidParameter(debuginfo) when it does not.
    """
    if value is None:
        if allownull:
            return None
        raise InvalidParameter(debuginfo)
    if isinstance(value, (dict, list)):
        raise InvalidParameter(debuginfo)
    cleaned = clean_param(value, ptype)
    if ptype == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cleaned
        if not is_numeric(value):
            raise InvalidParameter(debuginfo)
    elif php_str(value) != php_str(cleaned):
        raise InvalidParameter(debuginfo)
    return cleaned


def validate_parameters(node: Node, params: Any) -> Any:
    """Validate `params` against `node`; raises InvalidParameter with Moodle's debuginfo."""
    if params is None and node.nullable:
        return None
    if type(node) is Value:
        if isinstance(params, (dict, list)):
            raise InvalidParameter("Scalar type expected, array or object received.")
        if node.ptype == "bool" and _is_bool_like(params):
            return bool(int(params))
        debuginfo = (
            f'Invalid external api parameter: the value is "{php_str(params)}", '
            f'the server was expecting "{node.ptype}" type'
        )
        return validate_param(params, node.ptype, node.nullable, debuginfo)
    array = _as_array(params)
    if array is None:
        raise InvalidParameter(f"Only arrays accepted. The bad value is: '{_print_r(params)}'")
    if type(node) is Multiple:
        return [validate_parameters(node.items, item) for item in array.values()]
    result: dict[str, Any] = {}
    for key, sub in node.keys:
        if key not in array:
            if sub.required == REQUIRED:
                raise InvalidParameter(f"Missing required key in single structure: {key}")
            if sub.required != DEFAULT:
                continue
            raw = sub.default
        else:
            raw = array[key]
        try:
            result[key] = validate_parameters(sub, raw)
        except InvalidParameter as exc:
            raise InvalidParameter(f"{key} => {exc.message}: {exc.debuginfo}") from None
    extra = [php_str(k) for k in array if k not in node.names]
    if extra:
        raise InvalidParameter(f"Unexpected keys ({', '.join(extra)}) detected in parameter array.")
    return result


_NO_DEFAULT = object()
_TRIM = " \t\n\r\0\x0b"
# str values these types' cleaning certainly leaves unchanged (the common case, checked fast)
_STR_UNCHANGED: dict[str, Callable[[str], Any]] = {
    "text": lambda s: "<" not in s and "\0" not in s,
    "notags": lambda s: "<" not in s and "\0" not in s,
    "raw_trimmed": lambda s: s == s.strip(_TRIM),
    "alpha": re.compile(r"[a-zA-Z]*").fullmatch,
    "alphanum": re.compile(r"[A-Za-z0-9]*").fullmatch,
    "alphanumext": re.compile(r"[A-Za-z0-9_-]*").fullmatch,
    "safedir": re.compile(r"[a-zA-Z0-9_-]*").fullmatch,
    "username": re.compile(r"[-.@_a-z0-9]*").fullmatch,
}
_memo: dict[tuple[str, str], bool] = {}


def _memo_unchanged(ptype: str) -> Callable[[str], bool]:
    # URLs, languages, themes... repeat a lot: remember which strings survive cleaning.
    def unchanged(s: str) -> bool:
        """True if cleaning leaves `s` as it is (memoised)."""
        key = (ptype, s)
        hit = _memo.get(key)
        if hit is None:
            if len(_memo) > 200_000:
                _memo.clear()
            hit = _memo[key] = clean_param(s, ptype) == s
        return hit

    return unchanged


def _clean_value_slow(node: Value, value: Any) -> Any:
    ptype = node.ptype
    if ptype == "bool" and _is_bool_like(value):
        return bool(int(value))
    if isinstance(value, (dict, list)):
        raise InvalidResponse("Scalar type expected, array or object received.")
    debuginfo = (
        f'Invalid external api response: the value is "{php_str(value)}" of PHP type '
        f'"{php_type(value)}", the server was expecting "{ptype}" type'
    )
    try:
        return validate_param(value, ptype, node.nullable, debuginfo)
    except InvalidParameter as exc:
        raise InvalidResponse(exc.debuginfo or "") from None


def _value_cleaner(node: Value) -> Callable[[Any], Any]:
    ptype = node.ptype
    if ptype == "int":
        return lambda v: v if type(v) is int else _clean_value_slow(node, v)
    if ptype == "bool":
        return lambda v: v if type(v) is bool else _clean_value_slow(node, v)
    if ptype == "raw":
        return lambda v: _clean_value_slow(node, v) if isinstance(v, (dict, list)) else v
    unchanged = _STR_UNCHANGED.get(ptype) or _memo_unchanged(ptype)
    return lambda v: v if type(v) is str and unchanged(v) else _clean_value_slow(node, v)


def _multiple_cleaner(node: Multiple) -> Callable[[Any], Any]:
    item = cleaner_for(node.items)

    def clean(response: Any) -> list:
        if type(response) is list:
            return [item(v) for v in response]
        array = _as_array(response)
        if array is None:
            raise InvalidResponse(f"Only arrays accepted. The bad value is: '{_print_r(response)}'")
        return [item(v) for v in array.values()]

    return clean


def _single_cleaner(node: Single) -> Callable[[Any], Any]:
    entries = [
        (key, cleaner_for(sub), sub.required == REQUIRED,
         sub.default if (sub.required == DEFAULT and type(sub) is Value) else _NO_DEFAULT)
        for key, sub in node.keys
    ]  # fmt: skip

    def clean(response: Any) -> Any:
        array = response if type(response) is dict else _as_array(response)
        if array is None:
            raise InvalidResponse(
                f"Only arrays/objects accepted. The bad value is: '{_print_r(response)}'"
            )
        result: dict[str, Any] = {}
        for key, cleaner, required, default in entries:
            if key in array:
                raw = array[key]
            elif required:
                raise InvalidResponse(
                    "Error in response - Missing following required key in a single structure: "
                    + key
                )
            elif default is not _NO_DEFAULT:
                raw = default
            else:
                continue
            try:
                result[key] = cleaner(raw)
            except InvalidResponse as exc:
                raise InvalidResponse(f"{key} => {exc.message}: {exc.debuginfo}") from None
        return result or []

    return clean


def cleaner_for(node: Node) -> Callable[[Any], Any]:
    """The compiled clean_returnvalue for `node` (built once, kept on the node)."""
    cleaner = node.cleaner
    if cleaner is None:
        if type(node) is Value:
            cleaner = _value_cleaner(node)
        elif type(node) is Multiple:
            cleaner = _multiple_cleaner(node)
        else:
            cleaner = _single_cleaner(node)  # type: ignore[arg-type]
        node.cleaner = cleaner
    return cleaner


def clean_returnvalue(node: Node, response: Any) -> Any:
    """Moodle `clean_returnvalue()`: drop undeclared keys, order keys, apply value defaults.

    Only value nodes get their default when missing (lists and objects stay absent). An
    object that ends up empty is returned as `[]`, as PHP's json_encode writes it.
    Raises InvalidResponse with Moodle's debuginfo path.
    """
    return cleaner_for(node)(response)
