"""The HTTP app over real HTTP on 127.0.0.1: one JSON error shape, capped bodies, clean stop."""

import logging
import socket

import pytest
import requests
from werkzeug.wrappers import Response

from sidecar.callbacks import CallbackRejected
from sidecar.errors import ConfigError
from sidecar.web.app import make_app
from sidecar.web.server import HttpServer

MAX_BODY = 4096
JSON = {"Content-Type": "application/json"}


class Recorder:
    """A handle_callback that records what it was given and answers counts."""

    def __init__(self, answer=None, error=None):
        self.calls = []
        self.answer = answer or {"accepted": 1, "ignored": 0}
        self.error = error

    def __call__(self, raw, signature):
        self.calls.append((raw, signature))
        if self.error is not None:
            raise self.error
        return self.answer


@pytest.fixture
def serve(serve_app):
    def start(handler=None, health=lambda: (True, {"database": {"ok": True}}), **kw):
        return serve_app(
            handle_callback=handler or Recorder(), health=health, max_body=MAX_BODY, **kw
        )

    return start


def assert_json_error(resp, status):
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error", "status"} and body["status"] == status and body["error"]
    return body


def test_callback_gets_raw_body_and_signature_and_its_answer_is_200_json(serve):
    handler = Recorder({"accepted": 2, "ignored": 1})
    srv = serve(handler)
    raw = b'{"schema": "offload.callback.v1",  "x": "\xc5\x81"}'
    resp = requests.post(
        f"{srv.url}/callback", data=raw, headers={**JSON, "X-Signature": "sha256=ab12"}, timeout=10
    )
    assert resp.status_code == 200 and resp.json() == {"accepted": 2, "ignored": 1}
    assert handler.calls == [(raw, "sha256=ab12")]


def test_callback_without_signature_passes_none(serve):
    handler = Recorder()
    srv = serve(handler)
    requests.post(f"{srv.url}/callback", data=b"{}", headers=JSON, timeout=10)
    assert handler.calls == [(b"{}", None)]


def test_json_with_charset_is_accepted(serve):
    srv = serve()
    resp = requests.post(
        f"{srv.url}/callback",
        data=b"{}",
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=10,
    )
    assert resp.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{"Content-Type": "text/plain"}, {"Content-Type": "application/x-www-form-urlencoded"}, {}],
    ids=["text", "form", "none"],
)
def test_wrong_content_type_is_400_and_never_reaches_the_handler(serve, headers):
    handler = Recorder()
    srv = serve(handler)
    resp = requests.post(f"{srv.url}/callback", data=b"{}", headers=headers, timeout=10)
    assert "application/json" in assert_json_error(resp, 400)["error"]
    assert handler.calls == []


def test_body_over_the_limit_with_content_length_is_413(serve):
    handler = Recorder()
    srv = serve(handler)
    resp = requests.post(
        f"{srv.url}/callback", data=b"x" * (MAX_BODY + 1), headers=JSON, timeout=10
    )
    assert_json_error(resp, 413)
    assert handler.calls == []


def test_body_exactly_at_the_limit_is_accepted(serve):
    handler = Recorder()
    srv = serve(handler)
    resp = requests.post(f"{srv.url}/callback", data=b"x" * MAX_BODY, headers=JSON, timeout=10)
    assert resp.status_code == 200 and len(handler.calls[0][0]) == MAX_BODY


def test_chunked_body_over_the_limit_is_413(serve):
    handler = Recorder()
    srv = serve(handler)

    def chunks():
        for _ in range(10):
            yield b"y" * 1000

    resp = requests.post(f"{srv.url}/callback", data=chunks(), headers=JSON, timeout=10)
    assert resp.request.headers.get("Transfer-Encoding") == "chunked"
    assert_json_error(resp, 413)
    assert handler.calls == []


def test_small_chunked_body_is_read_whole(serve):
    handler = Recorder()
    srv = serve(handler)
    resp = requests.post(
        f"{srv.url}/callback", data=iter([b'{"a":', b"1}"]), headers=JSON, timeout=10
    )
    assert resp.status_code == 200 and handler.calls[0][0] == b'{"a":1}'


@pytest.mark.parametrize("status", [400, 401, 404, 409, 413])
def test_a_rejected_callback_answers_its_status_as_json(serve, status):
    srv = serve(Recorder(error=CallbackRejected(status, f"refused with {status}")))
    resp = requests.post(f"{srv.url}/callback", data=b"{}", headers=JSON, timeout=10)
    assert assert_json_error(resp, status)["error"] == f"refused with {status}"


def test_handler_crash_is_500_json_without_details_logged_once(serve, caplog):
    secret_body = b'{"token": "do-not-log-me"}'
    srv = serve(Recorder(error=RuntimeError("database exploded at /srv/secret/path")))
    with caplog.at_level(logging.DEBUG):
        resp = requests.post(
            f"{srv.url}/callback",
            data=secret_body,
            headers={**JSON, "X-Signature": "cafe" * 16},
            timeout=10,
        )
    body = assert_json_error(resp, 500)
    assert "exploded" not in resp.text and "Traceback" not in resp.text and "/srv" not in resp.text
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("sidecar")
    ]
    assert len(errors) == 1
    # the traceback rides on the record: as exc_info, or as exc_text once the daemon's
    # redacting log filter (installed by any test that ran `logsetup.setup`) has formatted it
    record = errors[0]
    traceback = record.exc_text or (
        logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
    )
    assert "RuntimeError: database exploded" in traceback
    assert "do-not-log-me" not in caplog.text and "cafe" * 16 not in caplog.text
    assert body["error"]


def test_healthz_is_200_with_the_state(serve):
    srv = serve(health=lambda: (True, {"database": {"ok": True, "schema": 3}}))
    resp = requests.get(f"{srv.url}/healthz", timeout=10)
    assert resp.status_code == 200
    assert resp.json() == {"ok": True, "database": {"ok": True, "schema": 3}}


def test_healthz_is_503_when_unhealthy(serve):
    srv = serve(health=lambda: (False, {"database": {"ok": False, "error": "OperationalError"}}))
    resp = requests.get(f"{srv.url}/healthz", timeout=10)
    assert resp.status_code == 503
    assert resp.json()["ok"] is False and resp.json()["database"]["error"] == "OperationalError"


@pytest.mark.parametrize("path", ["/", "/nope", "/callback/extra", "/api/jobs"])
def test_unknown_path_is_404_json(serve, path):
    srv = serve()
    assert_json_error(requests.get(f"{srv.url}{path}", timeout=10), 404)


@pytest.mark.parametrize(
    "method, path, allowed",
    [("GET", "/callback", "POST"), ("POST", "/healthz", "GET"), ("DELETE", "/verify/ABC", "GET")],
)
def test_wrong_method_is_405_json_with_allow(serve, method, path, allowed):
    srv = serve()
    resp = requests.request(method, f"{srv.url}{path}", timeout=10)
    assert_json_error(resp, 405)
    assert allowed in resp.headers["Allow"]


def test_certificate_route_serves_what_the_callable_returns(serve):
    def certificate(code):
        return Response(b"%PDF-1.4 fake", mimetype="application/pdf") if code == "ABC123" else None

    srv = serve(certificate=certificate)
    resp = requests.get(f"{srv.url}/certificates/ABC123", timeout=10)
    assert resp.status_code == 200 and resp.content == b"%PDF-1.4 fake"
    assert resp.headers["Content-Type"] == "application/pdf"
    assert_json_error(requests.get(f"{srv.url}/certificates/NOPE", timeout=10), 404)


def test_certificate_route_without_a_callable_is_404(serve):
    srv = serve()
    assert_json_error(requests.get(f"{srv.url}/certificates/ABC123", timeout=10), 404)


def test_certificate_redirect_is_passed_through(serve):
    srv = serve(
        certificate=lambda code: Response(
            status=302, headers={"Location": "https://bucket.example/x.pdf?sig=1"}
        )
    )
    resp = requests.get(f"{srv.url}/certificates/ABC", allow_redirects=False, timeout=10)
    assert (
        resp.status_code == 302 and resp.headers["Location"] == "https://bucket.example/x.pdf?sig=1"
    )


def test_verify_page_is_html_and_unknown_code_is_a_404_page(serve):
    srv = serve(
        verify_page=lambda code: "<h1>Certificate ABC: valid</h1>" if code == "ABC" else None
    )
    ok = requests.get(f"{srv.url}/verify/ABC", timeout=10)
    assert (
        ok.status_code == 200
        and ok.headers["Content-Type"].startswith("text/html")
        and "valid" in ok.text
    )
    missing = requests.get(f"{srv.url}/verify/%3Cscript%3E", timeout=10)
    assert missing.status_code == 404 and missing.headers["Content-Type"].startswith("text/html")
    assert "not found" in missing.text and "<script>" not in missing.text


# --- the server ------------------------------------------------------------------------------


def test_port_0_binds_a_free_port_and_url_names_it(serve):
    srv = serve()
    assert srv.port > 0 and srv.url == f"http://127.0.0.1:{srv.port}"
    assert requests.get(f"{srv.url}/healthz", timeout=10).status_code == 200


def test_bind_conflict_raises_at_start_naming_the_address():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        srv = HttpServer(
            make_app(handle_callback=Recorder(), health=lambda: (True, {})), "127.0.0.1", port
        )
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            srv.start()
    finally:
        taken.close()


def test_stop_closes_the_listener_and_is_idempotent():
    srv = HttpServer(
        make_app(handle_callback=Recorder(), health=lambda: (True, {})), "127.0.0.1", 0
    )
    srv.start()
    url = srv.url
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
    srv.stop()
    srv.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=10)


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_loopback_is_served_with_a_bracketed_url():
    srv = HttpServer(make_app(handle_callback=Recorder(), health=lambda: (True, {})), "::1", 0)
    srv.start()
    try:
        assert srv.url == f"http://[::1]:{srv.port}"
        assert requests.get(f"{srv.url}/healthz", timeout=10).json()["ok"] is True
    finally:
        srv.stop()
