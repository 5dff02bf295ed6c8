"""Sign-in, sessions, CSRF, the rate limit and bearer tokens through the real HTTP app on
127.0.0.1 (requests.Session as the browser), the ledger on every backend, and the Moodle
sandbox's login/token.php for Moodle accounts."""

import logging
import re

import pytest
import requests
from cryptography.fernet import Fernet

from sidecar import access
from sidecar.config import Config
from sidecar.db.models import AuditLog, LoginFailure, WebSession
from sidecar.sessions import Sessions
from sidecar.web.dashboard import COOKIE, Dashboard
from tests.moodle_ws.test_sandbox import make_moodle

PASSWORD = "correct horse battery"
MOODLE_ADMIN = ("admin", "Admin-pass1!")
MOODLE_MANAGER = ("manager", "password")  # a Moodle user who is not a site administrator
# the sandbox's IOMAD company manager (managertype 1) of the first company, 4, and its
# department manager (managertype 2) of a department of the last company, 5
COMPANY_MANAGER = ("companymanager", "Manager-pass1!")
DEPARTMENT_MANAGER = ("deptmanager", "Manager-pass1!")


@pytest.fixture(scope="module")
def moodle():
    m = make_moodle(learners=5)
    yield m
    m.server.stop()


def make_config(moodle=None, public_url="http://127.0.0.1:8765", **dashboard):
    raw = {
        "server": {"public_url": public_url},
        "security": {"encryption_key": Fernet.generate_key().decode()},
        "dashboard": {"enabled": True, **dashboard},
    }
    if moodle is not None:
        raw["moodle"] = {"url": moodle.server.url, "token": moodle.site.token}
    return Config.model_validate(raw)


@pytest.fixture
def serve(serve_app, db, clock):
    def start(config=None):
        config = config or make_config()
        dashboard = Dashboard(config, clock)
        srv = serve_app(handle_callback=lambda raw, sig: {}, health=lambda: (True, {}),
                        dashboard=dashboard)  # fmt: skip
        return srv

    return start


@pytest.fixture
def alice(db, clock):
    access.add_account("alice", PASSWORD, clock())
    return "alice"


def form_csrf(resp) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', resp.text).group(1)


def sign_in(srv, browser, username, password, **extra):
    page = browser.get(f"{srv.url}/login", timeout=10)
    data = {"username": username, "password": password, "csrf": form_csrf(page), **extra}
    return browser.post(f"{srv.url}/login", data=data, allow_redirects=False, timeout=30)


def events(*names):
    return [(a.event, a.detail) for a in AuditLog.select().order_by(AuditLog.id)
            if a.event in names]  # fmt: skip


def test_local_account_signs_in_sees_its_name_and_signs_out(serve, alice):
    srv, browser = serve(), requests.Session()
    page = browser.get(f"{srv.url}/login", timeout=10)
    assert page.status_code == 200 and '<input type="password"' in page.text
    resp = sign_in(srv, browser, "alice", PASSWORD)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/")
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # public_url is http
    home = browser.get(f"{srv.url}/", timeout=10)
    assert home.status_code == 200 and "Signed in as <strong>alice</strong>" in home.text
    assert "Sign out" in home.text and home.headers["Cache-Control"] == "no-store"
    who = browser.get(f"{srv.url}/api/v1/whoami", timeout=10).json()
    assert who == {"name": "alice", "kind": "session", "source": "local", "is_admin": True,
                   "companies": [], "read_only": False}  # fmt: skip
    out = browser.post(f"{srv.url}/logout", data={"csrf": form_csrf(home)},
                       allow_redirects=False, timeout=10)  # fmt: skip
    assert out.status_code == 303 and out.headers["Location"].endswith("/login")
    assert browser.get(f"{srv.url}/api/v1/whoami", timeout=10).status_code == 401
    assert WebSession.select().count() == 0
    (_, login), (_, logout) = events("login", "logout")
    assert '"name": "alice"' in login and '"address": "127.0.0.1"' in login
    assert '"name": "alice"' in logout


def test_cookie_is_secure_when_public_url_is_https(serve, alice):
    srv = serve(make_config(public_url="https://offload.example.org"))
    page = requests.get(f"{srv.url}/login", timeout=10)
    assert "Secure" in page.headers["Set-Cookie"]
    # a browser sends Secure cookies only over https; this test's plain http sends it by hand
    data = {"username": "alice", "password": PASSWORD, "csrf": form_csrf(page)}
    cookies = {"offload_login": page.cookies["offload_login"]}
    resp = requests.post(f"{srv.url}/login", data=data, cookies=cookies,
                         allow_redirects=False, timeout=10)  # fmt: skip
    assert resp.status_code == 303 and "Secure" in resp.headers["Set-Cookie"]


def test_signed_out_visitor_is_sent_to_the_form_and_the_api_answers_401_json(serve):
    srv = serve()
    home = requests.get(f"{srv.url}/", allow_redirects=False, timeout=10)
    assert home.status_code == 303 and home.headers["Location"].endswith("/login")
    who = requests.get(f"{srv.url}/api/v1/whoami", timeout=10)
    assert who.status_code == 401 and who.json()["status"] == 401
    assert "Bearer" in who.json()["error"]


def test_wrong_password_shows_the_form_again_with_one_generic_message(serve, alice, caplog):
    caplog.set_level(logging.DEBUG)
    srv, browser = serve(), requests.Session()
    wrong = "not the password at all"
    for name in ("alice", "nobody"):
        resp = sign_in(srv, browser, name, wrong)
        assert resp.status_code == 401
        assert "Wrong username or password." in resp.text and '<input type="password"' in resp.text
        assert wrong not in resp.text and COOKIE not in resp.headers.get("Set-Cookie", "")
    failed = events("login_failed")
    assert [('"username": "alice"' in d, '"address": "127.0.0.1"' in d) for _, d in failed][0] == (
        True,
        True,
    )
    assert all(wrong not in d for _, d in failed) and wrong not in caplog.text
    assert browser.get(f"{srv.url}/api/v1/whoami", timeout=10).status_code == 401


def test_sign_in_gives_a_new_cookie_and_the_old_one_stops_working(serve, alice):
    """No session fixation: a cookie set before sign-in (planted, or an earlier session)
    is never the signed-in one."""
    srv, browser = serve(), requests.Session()
    browser.cookies.set(COOKIE, "planted-by-an-attacker", domain="127.0.0.1", path="/")
    sign_in(srv, browser, "alice", PASSWORD)
    first = browser.cookies.get(COOKIE)
    assert first and first != "planted-by-an-attacker"
    sign_in(srv, browser, "alice", PASSWORD)
    second = browser.cookies.get(COOKIE)
    assert second != first
    stale = requests.get(f"{srv.url}/api/v1/whoami", cookies={COOKIE: first}, timeout=10)
    assert stale.status_code == 401
    assert browser.get(f"{srv.url}/api/v1/whoami", timeout=10).status_code == 200


def test_tampered_cookie_signs_nobody_in(serve, alice):
    srv, browser = serve(), requests.Session()
    sign_in(srv, browser, "alice", PASSWORD)
    value = browser.cookies.get(COOKIE)
    sid, _, mac = value.rpartition(".")
    flipped = sid[:-1] + ("A" if sid[-1] != "A" else "B")
    for forged in (f"{flipped}.{mac}", f"{sid}.{mac[:-1]}x", sid, ""):
        who = requests.get(f"{srv.url}/api/v1/whoami", cookies={COOKIE: forged}, timeout=10)
        assert who.status_code == 401, forged
        home = requests.get(f"{srv.url}/", cookies={COOKIE: forged}, allow_redirects=False,
                            timeout=10)  # fmt: skip
        assert home.status_code == 303


def test_session_ends_after_the_idle_timeout(serve, alice, clock):
    srv, browser = serve(make_config(idle_timeout="10m")), requests.Session()
    sign_in(srv, browser, "alice", PASSWORD)
    clock.advance(9 * 60)
    assert browser.get(f"{srv.url}/api/v1/whoami", timeout=10).status_code == 200
    clock.advance(9 * 60)  # 18 minutes after sign-in, 9 after the last request
    assert browser.get(f"{srv.url}/api/v1/whoami", timeout=10).status_code == 200
    clock.advance(10 * 60)
    assert browser.get(f"{srv.url}/api/v1/whoami", timeout=10).status_code == 401
    assert WebSession.select().count() == 0


def test_session_ends_at_the_absolute_timeout_even_in_use(serve, alice, clock):
    srv, browser = serve(make_config(absolute_timeout="1h")), requests.Session()
    sign_in(srv, browser, "alice", PASSWORD)
    for _ in range(5):
        clock.advance(10 * 60)
        assert browser.get(f"{srv.url}/api/v1/whoami", timeout=10).status_code == 200
    clock.advance(10 * 60)
    home = browser.get(f"{srv.url}/", allow_redirects=False, timeout=10)
    assert home.status_code == 303 and home.headers["Location"].endswith("/login")


def test_logout_without_or_with_a_wrong_csrf_token_is_403_and_changes_nothing(serve, alice):
    srv, browser = serve(), requests.Session()
    sign_in(srv, browser, "alice", PASSWORD)
    for data, headers in (({}, {}), ({"csrf": "guess"}, {}), ({}, {"X-CSRF-Token": "guess"})):
        resp = browser.post(f"{srv.url}/logout", data=data, headers=headers,
                            allow_redirects=False, timeout=10)  # fmt: skip
        assert resp.status_code == 403 and "CSRF" in resp.json()["error"]
    assert browser.get(f"{srv.url}/api/v1/whoami", timeout=10).status_code == 200
    assert WebSession.select().count() == 1 and not events("logout")
    token = form_csrf(browser.get(f"{srv.url}/", timeout=10))
    resp = browser.post(f"{srv.url}/logout", headers={"X-CSRF-Token": token},
                        allow_redirects=False, timeout=10)  # fmt: skip
    assert resp.status_code == 303 and WebSession.select().count() == 0


def test_sign_in_without_the_form_token_is_403_and_signs_nobody_in(serve, alice):
    srv, browser = serve(), requests.Session()
    browser.get(f"{srv.url}/login", timeout=10)
    for csrf in ("", "guess"):
        data = {"username": "alice", "password": PASSWORD, "csrf": csrf}
        resp = browser.post(f"{srv.url}/login", data=data, allow_redirects=False, timeout=10)
        assert resp.status_code == 403 and "expired" in resp.text
    fresh = requests.post(f"{srv.url}/login", data={"username": "alice", "password": PASSWORD},
                          allow_redirects=False, timeout=10)  # fmt: skip
    assert fresh.status_code == 403
    assert WebSession.select().count() == 0 and not events("login")


def test_five_failures_then_429_with_retry_after_until_the_window_passes(serve, alice, clock):
    srv, browser = serve(), requests.Session()
    for _ in range(5):
        assert sign_in(srv, browser, "alice", "wrong password here").status_code == 401
        clock.advance(60)
    locked = sign_in(srv, browser, "alice", PASSWORD)  # even the right password waits
    assert locked.status_code == 429 and "Too many failed sign-ins" in locked.text
    assert int(locked.headers["Retry-After"]) == 15 * 60 - 5 * 60 + 1
    assert events("login_throttled") and not events("login")
    clock.advance(11 * 60)  # the first failure has left the window
    assert sign_in(srv, browser, "alice", PASSWORD).status_code == 303
    assert LoginFailure.select().where(LoginFailure.username == "alice").count() == 0


def test_failures_count_per_username_across_addresses_and_per_address(db, clock):
    limits = Sessions(b"k" * 32, make_config().dashboard, clock)
    for i in range(5):
        limits.record_failure(f"10.0.0.{i}", "alice")
    assert limits.retry_after("10.0.0.99", "alice") == 15 * 60 + 1
    assert limits.retry_after("10.0.0.99", "bob") == 0
    for name in ("u1", "u2", "u3", "u4", "u5"):
        limits.record_failure("192.0.2.7", name)
    assert limits.retry_after("192.0.2.7", "someone-else") > 0


def test_moodle_site_admin_signs_in_and_the_token_is_dropped(serve, moodle, caplog):
    caplog.set_level(logging.DEBUG)
    srv, browser = serve(make_config(moodle)), requests.Session()
    before = set(moodle.site.tokens)
    resp = sign_in(srv, browser, *MOODLE_ADMIN)
    assert resp.status_code == 303, resp.text
    who = browser.get(f"{srv.url}/api/v1/whoami", timeout=10).json()
    assert who["name"] == "admin" and who["source"] == "moodle" and who["is_admin"]
    issued = [t for t in moodle.site.tokens if t not in before] or [
        t.token for t in moodle.site.tokens.values() if t.userid == 2
    ]
    stored = " ".join(
        [*(a.detail for a in AuditLog.select()), *(str(s.__data__) for s in WebSession.select())]
    )
    for secret in [MOODLE_ADMIN[1], *issued]:
        assert secret not in caplog.text and secret not in stored


def test_moodle_user_who_is_not_a_site_admin_is_refused(serve, moodle):
    srv, browser = serve(make_config(moodle)), requests.Session()
    resp = sign_in(srv, browser, *MOODLE_MANAGER)
    assert resp.status_code == 403 and "not a site administrator" in resp.text
    assert events("login_refused") and browser.cookies.get(COOKIE) is None


def managers_config(moodle, *names):
    return make_config(moodle, company_managers=list(names))


def test_site_admin_sees_every_company_even_when_managers_are_named(serve, moodle):
    srv, browser = serve(managers_config(moodle, "companymanager")), requests.Session()
    assert sign_in(srv, browser, *MOODLE_ADMIN).status_code == 303
    who = browser.get(f"{srv.url}/api/v1/whoami", timeout=10).json()
    assert who == {"name": "admin", "kind": "session", "source": "moodle", "is_admin": True,
                   "companies": [], "read_only": False}  # fmt: skip


def test_company_manager_signs_in_and_sees_exactly_their_company(serve, moodle, caplog):
    caplog.set_level(logging.DEBUG)
    assert sorted(moodle.site.companies) == [4, 5]
    srv, browser = serve(managers_config(moodle, "CompanyManager")), requests.Session()
    moodle.site.reset_counts()
    resp = sign_in(srv, browser, *COMPANY_MANAGER)
    assert resp.status_code == 303, resp.text
    # token.php, the user's site info, then one IOMAD call with the daemon's token
    assert moodle.site.request_count == 3
    assert moodle.site.requests_by_function == {
        "core_webservice_get_site_info": 1,
        "block_iomad_company_admin_get_user_companies": 1,
    }
    who = browser.get(f"{srv.url}/api/v1/whoami", timeout=10).json()
    assert who == {"name": "companymanager", "kind": "session", "source": "moodle",
                   "is_admin": False, "companies": [4], "read_only": False}  # fmt: skip
    home = browser.get(f"{srv.url}/", timeout=10)
    assert "Signed in as <strong>companymanager</strong>" in home.text
    ((_, login),) = events("login")
    assert '"name": "companymanager"' in login and '"source": "moodle"' in login
    # the user's own token (made now, or by an earlier test: Moodle reuses it), dropped
    issued = [t.token for t in moodle.site.tokens.values() if t.userid == 4]
    assert issued
    stored = " ".join(
        [*(a.detail for a in AuditLog.select()), *(str(s.__data__) for s in WebSession.select())]
    )
    for secret in [COMPANY_MANAGER[1], moodle.site.token, *issued]:
        assert secret not in caplog.text and secret not in stored


def test_a_learner_of_a_company_is_refused_with_no_session(serve, moodle):
    site = moodle.site
    row = next(cu for cu in site.company_users if cu.managertype == 0)
    learner = site.users[row.userid]
    srv, browser = serve(managers_config(moodle, "companymanager")), requests.Session()
    resp = sign_in(srv, browser, learner.username, learner.password)
    assert resp.status_code == 403
    assert "not a site administrator nor a company manager" in resp.text
    assert browser.cookies.get(COOKIE) is None and WebSession.select().count() == 0
    assert browser.get(f"{srv.url}/api/v1/whoami", timeout=10).status_code == 401
    ((_, refused),) = events("login_refused")
    assert f'"username": "{learner.username}"' in refused and not events("login")


def test_a_manager_not_named_in_the_config_is_refused(serve, moodle):
    """IOMAD's web services do not say who manages what: only the named ones get in (a
    department manager too, unless named)."""
    srv = serve(managers_config(moodle, "companymanager"))
    resp = sign_in(srv, requests.Session(), *DEPARTMENT_MANAGER)
    assert resp.status_code == 403 and WebSession.select().count() == 0
    srv = serve(make_config(moodle))
    assert sign_in(srv, requests.Session(), *COMPANY_MANAGER).status_code == 403


def test_a_named_manager_in_no_company_is_refused(serve, moodle):
    srv, browser = serve(managers_config(moodle, "manager")), requests.Session()
    resp = sign_in(srv, browser, *MOODLE_MANAGER)  # the token user: in no IOMAD company
    assert resp.status_code == 403 and "belongs to no IOMAD company" in resp.text
    assert browser.cookies.get(COOKIE) is None and events("login_refused")


def test_company_manager_with_a_wrong_password_is_a_plain_failure(serve, moodle, caplog):
    caplog.set_level(logging.DEBUG)
    srv = serve(managers_config(moodle, "companymanager"))
    wrong = "Manager-pass1?"
    moodle.site.reset_counts()
    resp = sign_in(srv, requests.Session(), "companymanager", wrong)
    assert resp.status_code == 401 and "Wrong username or password." in resp.text
    assert moodle.site.request_count == 1  # token.php only: IOMAD is not asked
    assert events("login_failed") and wrong not in caplog.text


def test_iomad_failing_to_name_the_companies_is_503_and_the_log_says_why(serve, moodle, caplog):
    srv = serve(managers_config(moodle, "companymanager"))
    moodle.site.iomad_user_companies_broken = True  # the $comany typo of some IOMAD builds
    try:
        resp = sign_in(srv, requests.Session(), *COMPANY_MANAGER)
    finally:
        moodle.site.iomad_user_companies_broken = False
    assert resp.status_code == 503 and "could not say which companies" in resp.text
    assert "companymanager: no companies: block_iomad_company_admin_get_user_companies" in (
        caplog.text
    )
    assert WebSession.select().count() == 0 and COMPANY_MANAGER[1] not in caplog.text


def test_moodle_down_while_checking_a_manager_is_503(serve, moodle):
    srv = serve(managers_config(moodle, "companymanager"))
    moodle.site.fail_next("block_iomad_company_admin_get_user_companies", status="reset")
    try:
        resp = sign_in(srv, requests.Session(), *COMPANY_MANAGER)
    finally:
        moodle.site.clear_faults()
    assert resp.status_code == 503 and "cannot be reached" in resp.text
    assert WebSession.select().count() == 0


def test_company_managers_must_be_moodle_usernames():
    with pytest.raises(ValueError, match="not a Moodle username"):
        make_config(company_managers=["carla compton"])


def test_wrong_moodle_password_is_a_plain_failure(serve, moodle):
    srv = serve(make_config(moodle))
    resp = sign_in(srv, requests.Session(), "admin", "Admin-pass1?")
    assert resp.status_code == 401 and "Wrong username or password." in resp.text
    assert events("login_failed")


def test_moodle_sign_in_is_off_with_an_empty_service(serve, moodle):
    srv = serve(make_config(moodle, moodle_service=""))
    assert sign_in(srv, requests.Session(), *MOODLE_ADMIN).status_code == 401


def test_bearer_token_valid_read_only_and_revoked(serve, clock, caplog):
    caplog.set_level(logging.DEBUG)
    srv = serve()
    value = access.create_token("monitor", clock(), company=4, read_only=True)
    url = f"{srv.url}/api/v1/whoami"
    who = requests.get(url, headers={"Authorization": f"Bearer {value}"}, timeout=10)
    assert who.status_code == 200
    assert who.json() == {"name": "monitor", "kind": "token", "source": "token",
                          "is_admin": False, "companies": [4], "read_only": True}  # fmt: skip
    for header in (f"Bearer {value}x", "Bearer ", f"Basic {value}", value):
        assert requests.get(url, headers={"Authorization": header}, timeout=10).status_code == 401
    access.revoke_token("monitor", clock())
    gone = requests.get(url, headers={"Authorization": f"Bearer {value}"}, timeout=10)
    assert gone.status_code == 401 and gone.json()["status"] == 401
    assert value not in caplog.text


def test_dashboard_off_answers_404_on_its_paths(serve_app):
    srv = serve_app(handle_callback=lambda raw, sig: {}, health=lambda: (True, {}))
    for path in ("/", "/login", "/api/v1/whoami"):
        resp = requests.get(f"{srv.url}{path}", timeout=10)
        assert resp.status_code == 404 and "dashboard is off" in resp.json()["error"]


def test_the_daemon_serves_sign_in_when_the_dashboard_is_enabled(tmp_path):
    from sidecar.config import load
    from sidecar.daemon import Daemon

    key = Fernet.generate_key().decode()
    path = tmp_path / "offload.toml"
    path.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path}/offload.db"\n[server]\nlisten = "127.0.0.1:0"\n'
        f'[security]\nencryption_key = "{key}"\n[dashboard]\nenabled = true\n'
    )
    daemon = Daemon(load(path), path)
    daemon.start(schedules=False)
    try:
        access.add_account("ops", PASSWORD, daemon.runtime.clock())
        browser = requests.Session()
        assert sign_in(daemon.http, browser, "ops", PASSWORD).status_code == 303
        assert browser.get(f"{daemon.http.url}/api/v1/whoami", timeout=10).json()["name"] == "ops"
    finally:
        daemon.shutdown()


def test_company_manager_signs_in_through_the_form_in_a_browser(serve, moodle, page):
    """Headless Chromium (tests/browser.py) fills /login as a person would: the cookie it
    gets is HttpOnly, so only the browser's own requests show who it is."""
    srv = serve(managers_config(moodle, "companymanager"))
    page.goto(f"{srv.url}/login")
    assert "IOMAD company managers" in page.locator("main, body").first.inner_text()
    page.get_by_label("Username").fill(COMPANY_MANAGER[0])
    page.get_by_label("Password").fill(COMPANY_MANAGER[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{srv.url}/")
    assert "Signed in as companymanager" in page.locator("body").inner_text()
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads the session
    who = page.context.request.get(f"{srv.url}/api/v1/whoami")
    assert who.status == 200
    assert who.json() == {"name": "companymanager", "kind": "session", "source": "moodle",
                          "is_admin": False, "companies": [4], "read_only": False}  # fmt: skip


def test_a_learner_is_turned_away_at_the_form_in_a_browser(serve, moodle, open_page):
    site = moodle.site
    learner = site.users[next(cu.userid for cu in site.company_users if cu.managertype == 0)]
    srv = serve(managers_config(moodle, "companymanager"))
    page = open_page()
    page.goto(f"{srv.url}/login")
    page.get_by_label("Username").fill(learner.username)
    page.get_by_label("Password").fill(learner.password)
    with page.expect_response(f"{srv.url}/login") as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 403
    assert "not a site administrator nor a company manager" in (
        page.get_by_role("alert").inner_text()
    )
    assert page.context.request.get(f"{srv.url}/api/v1/whoami").status == 401
