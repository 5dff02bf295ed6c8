"""PHP value semantics the sandbox needs: string casts, `(int)`, and Moodle's `clean_param`.

Moodle validates a parameter by cleaning it and comparing the string forms of the value
before and after (`validate_param`), so these casts decide what passes. They follow PHP 8
on a 64-bit build; `clean_param` follows lib/classes/param.php (4.4+) for the types the
web-service definitions use.
"""

import math
import re
from typing import Any

PHP_INT_MAX = 2**63 - 1
PHP_INT_MIN = -(2**63)

# What the sandbox site "has installed": PARAM_LANG / PARAM_AUTH / PARAM_THEME clean
# anything else to ''.
LANGS = frozenset({"en", "de", "fr", "es", "pl", "ru", "el", "pt_br", "tr", "ja"})
AUTH_PLUGINS = frozenset(
    {"manual", "nologin", "email", "ldap", "oauth2", "webservice", "db", "cas", "mnet", "lti"}
)
THEMES = frozenset({"boost", "classic", "iomadboost"})

_WS = " \t\n\r\x0b\x0c"
_NUMERIC_PREFIX = re.compile(
    r"[ \t\n\r\x0b\x0c]*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
)
_NUMERIC_FULL = re.compile(
    r"[ \t\n\r\x0b\x0c]*[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
    r"[ \t\n\r\x0b\x0c]*\Z"
)


def php_str(value: Any) -> str:
    """`(string)$value` for scalars (arrays are the caller's business)."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_str(value)
    if isinstance(value, (dict, list)):
        return "Array"
    return str(value)


def _float_str(f: float) -> str:
    # PHP casts floats with precision=14 and prints exponents as 1.0E+25.
    if math.isnan(f):
        return "NAN"
    if math.isinf(f):
        return "INF" if f > 0 else "-INF"
    s = f"{f:.14G}"
    if "E" in s:
        mantissa, exp = s.split("E")
        if "." not in mantissa:
            mantissa += ".0"
        sign = "-" if exp.startswith("-") else "+"
        return f"{mantissa}E{sign}{int(exp.lstrip('+-'))}"
    return s


def php_type(value: Any) -> str:
    """`gettype($value)`."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    if isinstance(value, (dict, list)):
        return "array"
    return "string"


def is_numeric(value: Any) -> bool:
    """PHP 8 `is_numeric()`."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and _NUMERIC_FULL.match(value) is not None


def _clamp(n: int) -> int:
    return max(PHP_INT_MIN, min(PHP_INT_MAX, n))


def php_int(value: Any) -> int:
    """`(int)$value`."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return _clamp(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return 0
        return _clamp(int(value))
    if isinstance(value, (dict, list)):
        return 1 if value else 0
    m = _NUMERIC_PREFIX.match(str(value))
    if not m:
        return 0
    text = m.group(1)
    if "." in text or "e" in text or "E" in text:
        return php_int(float(text))
    return _clamp(int(text))


def php_float(value: Any) -> float:
    """`(float)$value`."""
    if isinstance(value, (bool, int, float)):
        return float(value)
    if value is None:
        return 0.0
    m = _NUMERIC_PREFIX.match(str(value))
    return float(m.group(1)) if m else 0.0


def php_empty(value: Any) -> bool:
    """PHP `empty()`: '0', '', 0, 0.0, null, false and [] are empty ('false' is not)."""
    return value in (None, False, 0, "", "0") or value == [] or value == {}


def php_loose_eq(a: Any, b: Any) -> bool:
    """PHP 8 `$a == $b` for a string against a scalar (enough for Moodle's value checks)."""
    if isinstance(a, str) and isinstance(b, str):
        if is_numeric(a) and is_numeric(b):
            return php_float(a) == php_float(b)
        return a == b
    if isinstance(a, str) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return php_float(a) == b if is_numeric(a) else a == php_str(b)
    if isinstance(b, str) and isinstance(a, (int, float)) and not isinstance(a, bool):
        return php_loose_eq(b, a)
    return a == b


def php_trim(s: str) -> str:
    """PHP `trim()` (space, tab, newlines, NUL, vertical tab)."""
    return s.strip(" \t\n\r\0\x0b")


_TAG = re.compile(r"<(?![ \t\n\r\x0b\x0c])[^>]*(?:>|\Z)", re.S)


def strip_tags(s: str) -> str:
    """PHP `strip_tags()`: a '<' not followed by whitespace opens a tag up to the next '>'."""
    if "<" not in s and "\0" not in s:
        return s
    return _TAG.sub("", s).replace("\0", "")


_MULTILANG = re.compile(r'<span(?:\s+lang="[a-zA-Z0-9_-]+"|\s+class="multilang"){2}\s*>|</span>')


def _clean_text(s: str) -> str:
    # PARAM_TEXT keeps well-formed multilang spans and strips every other tag.
    if "<" not in s:
        return s.replace("\0", "")
    kept: list[str] = []

    def hold(m: re.Match) -> str:
        """Swap a kept multilang tag for a placeholder."""
        kept.append(m.group(0))
        return f"\x01{len(kept) - 1}\x01"

    held = _MULTILANG.sub(hold, s) if "multilang" in s else s
    out = strip_tags(held)
    return re.sub("\x01([0-9]+)\x01", lambda m: kept[int(m.group(1))], out)


_PLUGIN = re.compile(r"[a-z](?:[a-z0-9_](?!__))*[a-z0-9]+\Z")
_COMPONENT = re.compile(r"[a-z][a-z0-9]*(?:_[a-z][a-z0-9_]*)?[a-z0-9]+\Z")
_TIMEZONE = re.compile(
    r"(?:(?:[+-]?(?:0?[0-9](?:\.[5|0])?|1[0-3](?:\.0)?|1[0-2]\.5))|(?:99)|[A-Za-z0-9]+(?:/?[A-Za-z_-])+)\Z"
)
_EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+\Z"
)
_URL_BAD = re.compile(r"[\s<>\"`{}|\\^\x00-\x1f]")


def is_valid_plugin_name(name: Any) -> bool:
    """Moodle `is_valid_plugin_name()`."""
    return isinstance(name, str) and _PLUGIN.match(name) is not None


def validate_email(address: str) -> bool:
    """Moodle's `validate_email()` (approximated by an RFC 5322 dot-atom pattern)."""
    return _EMAIL.match(address) is not None


def _clean_file(s: str) -> str:
    s = re.sub(r"[\x00-\x1f\x7f&<>\"`|':\\/]", "", s)
    return "" if s in (".", "..") else s


def _clean_path(s: str) -> str:
    parts = s.replace("\\", "/").split("/")
    parts = [p if (p == "." and i == 0) else _clean_file(p) for i, p in enumerate(parts)]
    out = re.sub("//+", "/", "/".join(parts))
    return re.sub(r"/(?:\./)+", "/", out)


def _clean_username(s: str) -> str:
    s = php_trim(s).lower().replace(" ", "")
    return re.sub(r"[^-.@_a-z0-9]", "", s)


def _clean_url(s: str) -> str:
    # validateUrlSyntax() is long; the sandbox rejects what it certainly would.
    return "" if not s or _URL_BAD.search(s) or re.match(r"[a-z]+://[^/]*@", s) else s


def clean_param(value: Any, ptype: str) -> Any:
    """Moodle `clean_param($value, $type)`; `ptype` is the constant's value ('int', 'alpha'...).

    Raises ValueError for a type the sandbox does not know (Moodle: coding_exception).
    """
    if ptype == "raw":
        return value
    if ptype == "int":
        return php_int(value)
    if ptype == "float":
        return php_float(value)
    if ptype == "bool":
        low = php_str(value).lower()
        if low in ("on", "yes", "true"):
            return 1
        if low in ("off", "no", "false"):
            return 0
        return 0 if php_empty(value) else 1
    text = php_str(value)
    simple = _SIMPLE.get(ptype)
    if simple is not None:
        return simple.sub("", text)
    if ptype == "notags":
        return strip_tags(text)
    if ptype == "text":
        return _clean_text(text)
    if ptype == "raw_trimmed":
        return php_trim(text)
    if ptype == "clean":
        return value if is_numeric(value) else re.sub(r"(?is)<script.*?</script>", "", text)
    if ptype in ("plugin", "area"):
        return text if _PLUGIN.match(text) else ""
    if ptype == "component":
        bad = not _COMPONENT.match(text) or "__" in text
        bad = bad or (text.startswith("mod_") and text.count("_") != 1)
        return "" if bad else text
    if ptype == "auth":
        return text if _PLUGIN.match(text) and text in AUTH_PLUGINS else ""
    if ptype == "lang":
        cleaned = _SIMPLE["safedir"].sub("", text)
        return cleaned if cleaned in LANGS else ""
    if ptype == "theme":
        return text if _PLUGIN.match(text) and text in THEMES else ""
    if ptype == "username":
        return _clean_username(text)
    if ptype == "email":
        return text if validate_email(text) else ""
    if ptype in ("url", "localurl"):
        return _clean_url(text)
    if ptype == "file":
        return _clean_file(text)
    if ptype == "path":
        return _clean_path(text)
    if ptype == "tag":
        s = re.sub(r"\s+", " ", re.sub(r"[\x00-\x1f\x7f<>`]", "", text))
        return php_trim(s)[:50]
    if ptype == "timezone":
        return text if _TIMEZONE.match(text) else ""
    raise ValueError(f"Unknown parameter type: {ptype}")


_SIMPLE = {
    "alpha": re.compile(r"[^a-zA-Z]"),
    "alphaext": re.compile(r"[^a-zA-Z_-]"),
    "alphanum": re.compile(r"[^A-Za-z0-9]"),
    "alphanumext": re.compile(r"[^A-Za-z0-9_-]"),
    "sequence": re.compile(r"[^0-9,]"),
    "safedir": re.compile(r"[^a-zA-Z0-9_-]"),
    "safepath": re.compile(r"[^a-zA-Z0-9/_-]"),
}


def var_export_list(values: list) -> str:
    """PHP `var_export()` of a list, as Moodle's DML debuginfo prints query parameters."""
    lines = ["array ("]
    for i, v in enumerate(values):
        if isinstance(v, str):
            text = "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
        elif v is None:
            text = "NULL"
        elif isinstance(v, bool):
            text = "true" if v else "false"
        else:
            text = php_str(v)
        lines.append(f"  {i} => {text},")
    return "\n".join(lines) + "\n)"
