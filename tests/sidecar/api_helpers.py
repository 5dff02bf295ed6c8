"""What the API tests share: an app served on 127.0.0.1 with the dashboard on, callers
with each kind of credentials, and jobs in the ledger."""

import pytest
import requests

from sidecar import access, jobs
from sidecar.access import Principal
from sidecar.db import store
from sidecar.db.models import AuditLog, Recipient
from sidecar.web.dashboard import COOKIE, Dashboard
from tests.sidecar.test_dashboard_signin import make_config


class Caller:
    """A client of the API: a requests.Session with a token or a session cookie."""

    def __init__(self, url: str, *, token: str | None = None, cookie: str | None = None,
                 csrf: str | None = None):  # fmt: skip
        self.url = url
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"
        if cookie:
            self.http.cookies.set(COOKIE, cookie, domain="127.0.0.1", path="/")
        self.csrf = csrf

    def get(self, path: str, **params):
        return self.http.get(f"{self.url}/api/v1{path}", params=params, timeout=30)

    def post(self, path: str, *, csrf: str | None = "auto", **kw):
        headers = kw.pop("headers", {})
        token = self.csrf if csrf == "auto" else csrf
        if token:
            headers["X-CSRF-Token"] = token
        return self.http.post(f"{self.url}/api/v1{path}", headers=headers, timeout=60, **kw)

    def walk(self, path: str, **params) -> list[dict]:
        """Every item of a paginated list, following next_cursor."""
        items, cursor = [], None
        while True:
            page = self.get(path, **params, **({"cursor": cursor} if cursor else {}))
            assert page.status_code == 200, page.text
            body = page.json()
            items += body["items"]
            cursor = body["next_cursor"]
            if cursor is None:
                return items


class Api:
    """The served app and a way to make callers."""

    def __init__(self, srv, dashboard: Dashboard, clock):
        self.srv, self.dashboard, self.clock = srv, dashboard, clock
        self.url = srv.url

    def token(self, name: str, *, company: int | None = None, read_only=False) -> Caller:
        value = access.create_token(name, self.clock(), company=company, read_only=read_only)
        return Caller(self.url, token=value)

    def session(self, name="alice", *, companies=(), read_only=False) -> Caller:
        principal = Principal(name=name, kind="session", is_admin=not companies,
                              companies=tuple(companies), read_only=read_only,
                              source="local" if not companies else "moodle")  # fmt: skip
        made = self.dashboard.sessions.create(principal, "127.0.0.1")
        return Caller(self.url, cookie=made.cookie, csrf=made.csrf)

    def anonymous(self) -> Caller:
        return Caller(self.url)


def serve_api(serve_app, clock, config=None, runtime=None, **app) -> Api:
    """The app with the dashboard (and so the API) on; `app`: more of make_app's arguments."""
    dashboard = Dashboard(config or make_config(), clock, runtime)
    srv = serve_app(handle_callback=lambda raw, sig: {}, health=lambda: (True, {}),
                    dashboard=dashboard, **app)  # fmt: skip
    return Api(srv, dashboard, clock)


@pytest.fixture
def api(serve_app, db, clock) -> Api:
    return serve_api(serve_app, clock)


def people(n: int, start: int = 1) -> list[jobs.RecipientIn]:
    return [jobs.RecipientIn(i, f"user{i}@example.org", f"First{i}", f"Last{i}")
            for i in range(start, start + n)]  # fmt: skip


def make_job(clock, n=5, *, company=None, course=None, type="send_csv", failed=(), sent=()):
    """A job of `n` recipients (userids 1..n); `failed`/`sent` userids settle it."""
    spec = jobs.JobSpec(type=type, template_id="custom", source="test", tenant_id=company,
                        courseid=course)  # fmt: skip
    created = jobs.create_job(spec, people(n), batch_size=200, now=clock())
    if failed or sent:
        for userids, status in ((failed, "failed"), (sent, "sent")):
            error = "smtp 550" if status == "failed" else None
            Recipient.update(status=status, last_error=error).where(
                Recipient.job == created.job_id, Recipient.userid.in_(list(userids) or [0])
            ).execute()
        store.settle(created.job_id, clock())
    return created.job_id


def statuses(job_id: str) -> dict[int, str]:
    return {r.userid: r.status for r in Recipient.select().where(Recipient.job == job_id)}


def audit_events(*names):
    return [(a.event, a.detail) for a in AuditLog.select().order_by(AuditLog.id)
            if a.event in names]  # fmt: skip
