"""No token, secret or password ever reaches a log line."""

import io
import logging

from sidecar import logsetup


def test_registered_secrets_and_key_value_secrets_are_redacted():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logsetup.RedactingFilter())
    log = logging.getLogger("test.redaction")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    logsetup.add_secrets(["s3cr3t-callback-key"])
    try:
        log.info("verifying with %s", "s3cr3t-callback-key")
        log.info("GET /webservice/rest/server.php?wstoken=abcdef123456&wsfunction=x")
        log.info("login password=Tr0ub4dor for user")
        try:
            raise ValueError("bad key s3cr3t-callback-key")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    out = stream.getvalue()
    assert "s3cr3t-callback-key" not in out and "abcdef123456" not in out and "Tr0ub4dor" not in out
    assert out.count("***") >= 4 and "wsfunction=x" in out


def test_unsubscribe_tokens_in_logged_paths_are_redacted_by_the_daemons_handler(capsys):
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_moodle_offload", False)]
    for h in ours:  # setup() adds its handler once: start from none, writing to capsys
        root.removeHandler(h)
    level = root.level
    token = "12345.reminders.vtBj8csN1ln7S-DS1wxIxg"
    try:
        logsetup.setup("INFO")
        waitress = logging.getLogger("waitress")
        waitress.info("Client disconnected while serving /unsubscribe/%s", token)
        try:
            raise OSError(f"broken pipe on GET /unsubscribe/{token}?x=1 HTTP/1.1")
        except OSError:
            waitress.exception("Exception while serving /unsubscribe/%s", token)
    finally:
        for h in [h for h in root.handlers if getattr(h, "_moodle_offload", False)]:
            root.removeHandler(h)
        for h in ours:
            root.addHandler(h)
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "Client disconnected while serving /unsubscribe/***" in err
    assert "GET /unsubscribe/***?x=1" in err
    assert token not in err and "vtBj8csN1ln7S" not in err
