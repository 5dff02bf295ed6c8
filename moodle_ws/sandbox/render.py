"""Bodies and headers as webservice_rest_server writes them: PHP json_encode and its XML.

json_encode without flags: compact, '/' escaped as '\\/', non-ASCII as \\u escapes
(\\u0141). The XML form is Moodle's RESPONSE / SINGLE / MULTIPLE / KEY / VALUE
rendering, driven by the declared return structure (every declared key appears, missing
ones as null).
"""

import json
from html import escape
from typing import Any

from moodle_ws.sandbox.exceptions import LEGACY_CLASS, SandboxThrowable
from moodle_ws.sandbox.phpvalue import php_str
from moodle_ws.sandbox.spec import Multiple, Node, Value

REST_HEADERS = [
    ("Cache-Control", "private, must-revalidate, pre-check=0, post-check=0, max-age=0"),
    ("Expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
    ("Pragma", "no-cache"),
    ("Accept-Ranges", "none"),
    ("Access-Control-Allow-Origin", "*"),
]
JSON_TYPE = "application/json"
XML_TYPE = "application/xml; charset=utf-8"
XML_HEAD = '<?xml version="1.0" encoding="UTF-8" ?>\n'

_encoder = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def json_encode(value: Any) -> str:
    """PHP `json_encode($value)` with no flags."""
    # '/' only ever appears inside JSON strings, so a plain replace is exact.
    return _encoder.encode(value).replace("/", "\\/")


def rest_headers(fmt: str) -> list[tuple[str, str]]:
    """The headers `send_headers()` sets for `fmt` ('json' or 'xml')."""
    if fmt == "json":
        return [("Content-type", JSON_TYPE), *REST_HEADERS]
    return [
        ("Content-Type", XML_TYPE),
        ("Content-Disposition", 'inline; filename="response.xml"'),
        *REST_HEADERS,
    ]


def _h(text: str) -> str:
    # htmlspecialchars(ENT_COMPAT): & < > " but not '
    return escape(text, quote=False).replace('"', "&quot;")


def _xmlize(value: Any, node: Node | None) -> str:
    if node is None:
        return ""
    if type(node) is Value:
        if value is None:
            return '<VALUE null="null"/>\n'
        if isinstance(value, bool):
            value = int(value)
        return f"<VALUE>{_h(php_str(value))}</VALUE>\n"
    if type(node) is Multiple:
        items = value if isinstance(value, list) else list((value or {}).values())
        return "<MULTIPLE>\n" + "".join(_xmlize(v, node.items) for v in items) + "</MULTIPLE>\n"
    array = value if isinstance(value, dict) else {}
    keys = "".join(
        f'<KEY name="{key}">{_xmlize(array.get(key), sub)}</KEY>\n' for key, sub in node.keys
    )
    return "<SINGLE>\n" + keys + "</SINGLE>\n"


def success_body(cleaned: Any, returns: Node | None, fmt: str) -> str:
    """The body of a successful call (`cleaned` is the clean_returnvalue result)."""
    if fmt == "json":
        return json_encode(cleaned)
    return XML_HEAD + "<RESPONSE>\n" + _xmlize(cleaned, returns) + "</RESPONSE>\n"


def exception_class(exc: SandboxThrowable, legacy: bool) -> str:
    """The class name to show: 4.5+ names, or the 4.4 aliases with `legacy`."""
    return (
        LEGACY_CLASS.get(exc.exception_class, exc.exception_class)
        if legacy
        else exc.exception_class
    )


def error_body(exc: SandboxThrowable, fmt: str, debug: bool | str, legacy: bool = False) -> str:
    """`generate_error()`: exception, errorcode (Moodle exceptions only), message, debuginfo.

    `debug` True adds debuginfo (debugging NORMAL); "developer" also appends it to the
    message, as developer debugging with debugdisplay does.
    """
    show = bool(debug) and exc.debuginfo is not None
    message = exc.message
    if debug == "developer" and exc.debuginfo:
        message = f"{message} ({exc.debuginfo})"
    cls = exception_class(exc, legacy)
    if fmt == "json":
        body: dict[str, Any] = {"exception": cls}
        if exc.errorcode is not None:
            body["errorcode"] = exc.errorcode
        body["message"] = message
        if show:
            body["debuginfo"] = exc.debuginfo
        return json_encode(body)
    out = XML_HEAD + f'<EXCEPTION class="{cls}">\n'
    if exc.errorcode is not None:
        out += f"<ERRORCODE>{_h(exc.errorcode)}</ERRORCODE>\n"
    out += f"<MESSAGE>{_h(message)}</MESSAGE>\n"
    if show:
        out += f"<DEBUGINFO>{_h(exc.debuginfo or '')}</DEBUGINFO>\n"
    return out + "</EXCEPTION>\n"
