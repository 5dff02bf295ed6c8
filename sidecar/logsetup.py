"""The one place that adds log handlers; a filter that redacts every known secret."""

import logging
import os
import re
import sys
from collections.abc import Iterable

_SECRETS: set[str] = set()
# token=..., wstoken=..., password=... in URLs, forms and messages
_PATTERN = re.compile(r"(?i)\b(wstoken|token|password|passwd|secret)=([^&\s\"']+)")
# an unsubscribe link's token, in the request paths waitress logs (a client gone, an error)
_UNSUBSCRIBE_PATH = re.compile(r"(?i)(/unsubscribe/)[^\s/?#\"'<>]+")


class RedactingFilter(logging.Filter):
    """Replaces registered secret values, key=value secrets and unsubscribe tokens in paths
    with *** in each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    text = _UNSUBSCRIBE_PATH.sub(r"\1***", text)
    return _PATTERN.sub(lambda m: f"{m.group(1)}=***", text)


def add_secrets(values: Iterable[str]) -> None:
    """Register more secrets (after a config load or reload). Short values are ignored."""
    _SECRETS.update(v for v in values if v and len(v) >= 4)


def formatter(style: str = "text") -> logging.Formatter:
    """One line per event: `text` (level, logger, message; a timestamp unless journald
    adds its own) or `json` (one object a line: time, level, logger, message, and the
    exception when there is one), for a log shipper. Secrets are redacted before either."""
    if style == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    return logging.Formatter(fmt)


def configure(style: str, level: str | None = None) -> None:
    """Switch the handler setup() added to `style` (and the root logger to `level`): the
    daemon's `[logging]` section, applied once the config is read."""
    root = logging.getLogger()
    if level:
        root.setLevel(level.upper())
    for handler in root.handlers:
        if getattr(handler, "_moodle_offload", False):
            handler.setFormatter(formatter(style))


def setup(level: str = "INFO", secrets: Iterable[str] = ()) -> None:
    """Log to stderr; no timestamp under journald. Idempotent."""
    add_secrets(secrets)
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in root.handlers:
        if getattr(handler, "_moodle_offload", False):
            return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter("text"))
    handler.addFilter(RedactingFilter())
    handler._moodle_offload = True
    root.addHandler(handler)
    for noisy in ("xhtml2pdf", "fontTools", "PIL", "waitress.queue"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
