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
