"""The WSGI application: /webservice/rest/server.php and /login/token.php.

Request variables are read as PHP reads them (query string and, for POST, a form-encoded
or multipart body; a JSON body is ignored). Counting, latency and injected faults happen
here, before Moodle's own logic, as a proxy or a dying PHP worker would.
"""

import logging
import socket
import struct
import time
from http import HTTPStatus
from typing import Any

from werkzeug.formparser import parse_form_data

from moodle_ws.sandbox import dispatch
from moodle_ws.sandbox.phpform import array_merge, parse_pairs, parse_urlencoded
from moodle_ws.sandbox.render import error_body, rest_headers, success_body
from moodle_ws.sandbox.site import Site
from moodle_ws.sandbox.tokens import token_php

log = logging.getLogger(__name__)

REST_PATH = "/webservice/rest/server.php"
TOKEN_PATH = "/login/token.php"


def read_request(environ: dict, max_vars: int) -> tuple[dict, dict]:
    """$_GET and $_POST for this request."""
    query = environ.get("QUERY_STRING", "").encode("latin-1")
    get = parse_urlencoded(query, max_vars)
    post: dict = {}
    if environ.get("REQUEST_METHOD") == "POST":
        ctype = environ.get("CONTENT_TYPE", "").lower()
        if ctype.startswith("multipart/form-data"):
            _, form, _ = parse_form_data(environ, max_form_parts=None, silent=True)
            post = parse_pairs(form.items(multi=True), max_vars)
        else:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length > 0 else b""
            if ctype.startswith("application/x-www-form-urlencoded"):
                post = parse_urlencoded(body, max_vars)
    return get, post


def _function_name(get: dict, post: dict) -> str | None:
    name = post.get("wsfunction", get.get("wsfunction"))
    return name if isinstance(name, str) else None


def _reset_connection(environ: dict) -> bool:
    # waitress exposes its channel only through this bound method; closing the socket
    # with SO_LINGER 0 makes the client see a reset, as when a PHP worker is killed.
    probe = environ.get("waitress.client_disconnected")
    sock = getattr(getattr(probe, "__self__", None), "socket", None)
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    return True


class SandboxApp:
    """WSGI callable serving one `Site`."""

    def __init__(self, site: Site):
        self.site = site

    def __call__(self, environ: dict, start_response: Any):
        function: list[str | None] = [None]
        body = self._serve(environ, start_response, function)
        self.site.count_bytes(function[0], sum(len(b) for b in body))
        return body

    def _serve(self, environ: dict, start_response: Any, named: list):
        path = environ.get("PATH_INFO", "")
        if path not in (REST_PATH, TOKEN_PATH):
            if path in ("", "/"):
                return self._send(
                    start_response,
                    200,
                    [("Content-Type", "text/html; charset=utf-8")],
                    f"<h1>{self.site.sitename}</h1><p>Moodle sandbox</p>",
                )
            return self._send(start_response, 404, [("Content-Type", "text/plain")], "Not found")
        site = self.site
        get, post = read_request(environ, site.max_input_vars)
        function = _function_name(get, post) if path == REST_PATH else TOKEN_PATH.lstrip("/")
        site.count_request(function if path == REST_PATH else None)
        named[0] = function if path == REST_PATH else None
        delay = site.latency_by_function.get(function or "", site.latency)
        if delay:
            time.sleep(delay)
        fault = site.take_fault(function)
        if fault == "reset" and _reset_connection(environ):
            return self._send(start_response, 500, [("Content-Type", "text/plain")], "")
        if fault is not None:
            status = 500 if fault == "reset" else int(fault)
            phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
            html = f"<html><head><title>{status} {phrase}</title></head>"
            html += f"<body><h1>{phrase}</h1></body></html>"
            return self._send(
                start_response, status, [("Content-Type", "text/html; charset=UTF-8")], html
            )
        if path == TOKEN_PATH:
            return self._send(start_response, *token_php(site, get, post))
        return self._rest(start_response, get, post)

    def _rest(self, start_response: Any, get: dict, post: dict):
        site = self.site
        if not (site.webservices_enabled and site.protocol_enabled):
            return self._send(
                start_response, 403, [("Content-Type", "text/html; charset=UTF-8")], ""
            )
        settings = dispatch.read_settings(get, post)
        outcome = dispatch.serve(site, array_merge(get, post), settings)
        if outcome.error is not None:
            body = error_body(outcome.error, outcome.fmt, site.debug, site.legacy_exception_names)
        else:
            body = success_body(outcome.value, outcome.returns, outcome.fmt)
        return self._send(start_response, 200, rest_headers(outcome.fmt), body)

    @staticmethod
    def _send(start_response: Any, status: int, headers: list, body: str):
        data = body.encode("utf-8")
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Status"
        start_response(f"{status} {phrase}", [*headers, ("Content-Length", str(len(data)))])
        return [data]
