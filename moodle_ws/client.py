"""`MoodleClient`: REST calls over one pooled session, a concurrency cap and safe retries.

Every answer is checked for Moodle's error JSON, HTTP 200 or not. Retries (exponential
backoff with jitter) happen only on transient failures: network errors, HTTP 5xx and
maintenance mode. A call that changes something in Moodle is retried only when Moodle
cannot have run it (the connection was never made, or maintenance refused it first), so
a lost answer never sends a message twice.
"""

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from moodle_ws.encoding import encode
from moodle_ws.errors import (
    LoginError,
    MoodleAPIError,
    MoodleProtocolError,
    MoodleUnavailable,
    NotSent,
    SiteMaintenance,
    WebServicesDisabled,
    error_from_body,
)

log = logging.getLogger(__name__)

REST_PATH = "/webservice/rest/server.php"
TOKEN_PATH = "/login/token.php"
BATCH_FUNCTION = "tool_mobile_call_external_functions"

# Functions that change Moodle: retried only when Moodle cannot have run them.
WRITE_FUNCTIONS = frozenset(
    {
        "core_user_update_users",
        "core_user_create_users",
        "core_message_send_instant_messages",
        "block_iomad_company_admin_allocate_licenses",
        "block_iomad_company_admin_assign_users",
        "block_iomad_company_admin_unallocate_licenses",
        "local_iomad_licenserevoke_user_course",
        "local_iomad_restrict_email_template",
    }
)
WRITE_SUFFIXES = ("_record_certificate",)


@dataclass(frozen=True)
class ClientSettings:
    url: str  # the site's wwwroot
    token: str
    timeout: float = 30.0
    max_concurrency: int = 4
    verify_tls: bool = True
    attempts: int = 4  # tries of one call, the first included
    backoff: float = 1.0  # first retry delay in seconds; doubles, with jitter
    max_backoff: float = 30.0
    max_input_vars: int = 1000  # PHP's limit on form variables in one request
    # called after every HTTP request to the web services (each retry too) with
    # (function, outcome, seconds); outcome is one of OUTCOMES. For metrics; never raises.
    observe: Callable[[str, str, float], None] | None = field(default=None, compare=False)

    def __repr__(self) -> str:  # never the token
        return f"ClientSettings(url={self.url!r}, max_concurrency={self.max_concurrency})"

    @property
    def request_budget(self) -> float:
        """The longest a live Moodle keeps a caller waiting from one request's end (or a
        call's start) to the next request's end, in seconds: the longest backoff before a
        retry, then a connect and an answer each within `timeout`."""
        retries = self.attempts - 1
        longest_backoff = (
            min(self.max_backoff, self.backoff * 2 ** (retries - 1)) + self.backoff
            if retries
            else 0.0
        )
        return longest_backoff + 2 * self.timeout


#: what `ClientSettings.observe` is told of a request
OUTCOMES = ("ok", "error", "maintenance", "unreachable", "disabled", "protocol")


def outcome_of(exc: BaseException | None) -> str:
    """The outcome of a request that raised `exc` (None: it succeeded), one of OUTCOMES."""
    if exc is None:
        return "ok"
    if isinstance(exc, SiteMaintenance):
        return "maintenance"
    if isinstance(exc, MoodleAPIError):
        return "error"
    if isinstance(exc, MoodleUnavailable):
        return "unreachable"
    if isinstance(exc, WebServicesDisabled):
        return "disabled"
    return "protocol"


class RequestTally:
    """Counts HTTP requests made to Moodle (retries included); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0

    def add(self, n: int = 1) -> None:
        with self._lock:
            self.count += n


class _NotSent(NotSent):
    """The connection failed before the request went out: safe to retry any call."""


class MoodleClient:
    def __init__(self, settings: ClientSettings, session: requests.Session | None = None):
        self.settings = settings
        self.base = settings.url.rstrip("/")
        self.session = session or requests.Session()
        adapter = HTTPAdapter(pool_maxsize=settings.max_concurrency, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers["User-Agent"] = "moodle-offload"
        self._slots = threading.BoundedSemaphore(settings.max_concurrency)
        self.tally = RequestTally()  # every request this client made

    def __repr__(self) -> str:
        return f"MoodleClient({self.base!r})"

    def close(self) -> None:
        self.session.close()

    # --- one call -----------------------------------------------------------------------

    def call(
        self,
        function: str,
        params: Mapping[str, Any] | None = None,
        *,
        tally: RequestTally | None = None,
        writes: bool | None = None,
    ) -> Any:
        """Call one web-service function and return its decoded JSON.

        `writes` says whether the call changes Moodle (default: by the function's name);
        a write is retried only when Moodle cannot have run it.

        Raises a `MoodleAPIError` subclass for Moodle's error answer, `WebServicesDisabled`,
        `MoodleProtocolError`, or `MoodleUnavailable` once the retries are spent.
        """
        params = dict(params or {})
        form = [
            ("wstoken", self.settings.token),
            ("wsfunction", function),
            ("moodlewsrestformat", "json"),
            *encode(params),
        ]
        if len(form) > self.settings.max_input_vars:
            raise ValueError(
                f"{function}: {len(form)} form variables exceed max_input_vars "
                f"({self.settings.max_input_vars}); PHP would drop the rest: split the call"
            )
        if writes is None:
            writes = is_write(function)
        retryable = (_NotSent, SiteMaintenance) if writes else (MoodleUnavailable,)
        for attempt in self._retrying(retryable, function):
            with attempt:
                return self._post(function, form, params, tally)
        raise AssertionError("unreachable")  # pragma: no cover

    def _retrying(self, retryable: tuple[type[BaseException], ...], function: str) -> Retrying:
        s = self.settings

        def before_sleep(state) -> None:
            log.warning(
                "moodle %s: %s; retry %d/%d in %.1f s",
                function, state.outcome.exception(), state.attempt_number,
                s.attempts - 1, state.next_action.sleep,
            )  # fmt: skip

        return Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, retryable)),
            stop=stop_after_attempt(s.attempts),
            wait=wait_exponential(multiplier=s.backoff, max=s.max_backoff)
            + wait_random(0, s.backoff),
            before_sleep=before_sleep,
            reraise=True,
        )

    def _post(self, function, form, params, tally) -> Any:
        url = self.base + REST_PATH
        started = time.monotonic()
        failure: BaseException | None = None
        try:
            response = self._send(url, form, function, tally)
            log.debug("moodle %s: HTTP %d in %.3f s", function, response.status_code,
                      time.monotonic() - started)  # fmt: skip
            body = self._decode(response, function)
            if isinstance(body, dict) and _is_error(body):
                raise error_from_body(function, body, params)
            return body
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self._observe(function, failure, time.monotonic() - started)

    def _observe(self, function: str, failure: BaseException | None, seconds: float) -> None:
        if self.settings.observe is None:
            return
        try:
            self.settings.observe(function, outcome_of(failure), seconds)
        except Exception:  # noqa: BLE001 - an observer never breaks a call
            log.debug("moodle %s: the request observer failed", function, exc_info=True)

    def _send(self, url, form, what, tally) -> requests.Response:
        with self._slots:
            self.tally.add()
            if tally is not None:
                tally.add()
            try:
                return self.session.post(
                    url, data=form, timeout=self.settings.timeout, verify=self.settings.verify_tls
                )
            except requests.exceptions.ConnectTimeout as exc:
                raise _NotSent(f"{what}: cannot connect to {self.base}: timed out") from exc
            except requests.exceptions.SSLError as exc:
                raise MoodleProtocolError(
                    f"{what}: TLS failed for {self.base}: {exc.__class__.__name__} "
                    "(a self-signed certificate needs moodle.verify_tls = false)"
                ) from exc
            except requests.exceptions.ConnectionError as exc:
                if _never_connected(exc):
                    raise _NotSent(f"{what}: cannot connect to {self.base}") from exc
                raise MoodleUnavailable(f"{what}: connection to {self.base} lost") from exc
            except requests.exceptions.Timeout as exc:
                raise MoodleUnavailable(
                    f"{what}: no answer from {self.base} in {self.settings.timeout} s "
                    "(moodle.timeout)"
                ) from exc

    def _decode(self, response: requests.Response, function: str) -> Any:
        status, content = response.status_code, response.content
        if status == 403 and not content.strip():
            raise WebServicesDisabled(self.base)
        if status >= 500:
            raise MoodleUnavailable(f"{function}: {self.base} answered HTTP {status}")
        if status == 200 and not content.strip():
            raise WebServicesDisabled(self.base)  # what releases before 3.x answered
        try:
            body = json.loads(content)
        except ValueError:
            kind = "XML" if content.lstrip().startswith(b"<") else "not JSON"
            raise MoodleProtocolError(
                f"{function}: HTTP {status} from {self.base}{REST_PATH} is {kind}: "
                "check moodle.url (the site's address, without /webservice)"
            ) from None
        if status != 200 and not (isinstance(body, dict) and _is_error(body)):
            raise MoodleProtocolError(f"{function}: unexpected HTTP {status} from {self.base}")
        return body

    # --- many calls in one request --------------------------------------------------------

    def call_batch(
        self,
        calls: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        tally: RequestTally | None = None,
        tolerate: tuple[type[MoodleAPIError], ...] = (MoodleAPIError,),
    ) -> list[Any]:
        """Run calls through `tool_mobile_call_external_functions`, as few requests as fit.

        Returns one entry per call, in order: the decoded data (None for a function that
        returns nothing), or the `MoodleAPIError` that call produced. Moodle stops a batch
        at its first failing call, so the calls after it go in the next request. An inner
        `accessexception` (the inner function is not in the service) raises at once, since
        every later call of that function would fail the same way; so does any inner error
        that is not an instance of `tolerate`, before the rest is sent.
        """
        return list(self.iter_batch(calls, tally=tally, tolerate=tolerate))

    def iter_batch(
        self,
        calls: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        tally: RequestTally | None = None,
        tolerate: tuple[type[MoodleAPIError], ...] = (MoodleAPIError,),
    ) -> Iterator[Any]:
        """`call_batch` one request at a time: the results of a request are yielded before
        the next is sent, so a caller can reduce them without holding every answer."""
        per_request = (self.settings.max_input_vars - 3) // 2
        position = 0
        while position < len(calls):
            chunk = calls[position : position + per_request]
            answers = self.call(BATCH_FUNCTION, {"requests": [
                {"function": f, "arguments": json.dumps(dict(a), separators=(",", ":"))}
                for f, a in chunk
            ]}, tally=tally, writes=any(is_write(f) for f, _ in chunk))["responses"]  # fmt: skip
            if not answers:
                raise MoodleProtocolError(
                    f"{BATCH_FUNCTION}: an empty answer to {len(chunk)} calls"
                )
            for (function, args), answer in zip(chunk, answers, strict=False):
                result = _batch_result(function, args, answer)
                if isinstance(result, MoodleAPIError) and not isinstance(result, tolerate):
                    raise result
                yield result
            position += len(answers)

    # --- login/token.php -----------------------------------------------------------------

    def login(self, username: str, password: str, service: str) -> dict[str, Any]:
        """Ask `login/token.php` for a token; `{"token", "privatetoken"}` or `LoginError`."""
        form = [("username", username), ("password", password), ("service", service)]
        response = self._send(self.base + TOKEN_PATH, form, "login/token.php", None)
        if response.status_code >= 500:
            raise MoodleUnavailable(f"login/token.php: HTTP {response.status_code}")
        try:
            body = json.loads(response.content)
        except ValueError:
            raise MoodleProtocolError(
                f"login/token.php on {self.base} did not answer JSON: check moodle.url"
            ) from None
        if isinstance(body, dict) and "error" in body:
            raise LoginError(body.get("errorcode"), str(body.get("error")))
        if not isinstance(body, dict) or not isinstance(body.get("token"), str):
            raise MoodleProtocolError("login/token.php: no token in the answer")
        return body


def is_write(function: str) -> bool:
    """Whether `function` changes something in Moodle."""
    return function in WRITE_FUNCTIONS or function.endswith(WRITE_SUFFIXES)


def _is_error(body: Mapping[str, Any]) -> bool:
    return "exception" in body and "message" in body and set(body) <= {
        "exception", "errorcode", "message", "debuginfo",
    }  # fmt: skip


def _never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the TCP connection was refused or never made, so nothing was sent."""
    from urllib3.exceptions import NewConnectionError

    cause = exc.args[0] if exc.args else None
    return isinstance(getattr(cause, "reason", cause), NewConnectionError)


def _batch_result(function: str, args: Mapping[str, Any], answer: Mapping[str, Any]) -> Any:
    if not answer.get("error"):
        data = answer.get("data")
        return None if data is None else json.loads(data)
    try:
        inner = json.loads(answer.get("exception") or "{}")
    except ValueError:
        inner = {"message": str(answer.get("exception"))}
    inner.setdefault("message", inner.get("errorcode") or "error")
    error = error_from_body(function, inner, args)
    if inner.get("errorcode") == "accessexception":
        raise error
    return error


def is_error(result: Any) -> bool:
    """True for an entry of `call_batch` that is an error, not data."""
    return isinstance(result, MoodleAPIError)
