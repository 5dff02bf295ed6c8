"""login/token.php against examples/token/: its own error shape, token reuse and creation."""

import re

import pytest
import requests

from tests.moodle_ws.test_sandbox import example, make_moodle

JSON_UTF8 = "application/json; charset=utf-8"


@pytest.fixture
def m():
    moodle = make_moodle()
    yield moodle
    moodle.server.stop()


def login(m, **form):
    return requests.post(m.token_url, data=form, timeout=30)


def manager(m, **over):
    username, password = m.site.login_user
    return {"username": username, "password": password, "service": m.site.login_service, **over}


def _check(response, name, replace=None):
    expected = example(f"token/{name}.json")["response"]
    body = expected["body"]
    for old, new in (replace or {}).items():
        body = body.replace(old, new)
    assert response.status_code == expected["status"]
    assert response.text == body
    assert response.headers["Content-Type"] == JSON_UTF8
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_login_gives_the_existing_main_token(m):
    response = login(m, **manager(m))
    assert response.json() == {"token": m.site.token, "privatetoken": None}
    assert list(response.json()) == list(example("token/success.json")["response"]["json"])
    assert response.headers["Content-Type"] == JSON_UTF8


def test_username_is_trimmed_and_lower_cased(m):
    response = login(m, **manager(m, username="  MANAGER "))
    assert response.json()["token"] == m.site.token


def test_privatetoken_only_on_https_sites(m):
    m.site.https = True
    private = login(m, **manager(m)).json()["privatetoken"]
    assert re.fullmatch(r"[A-Za-z0-9]{64}", private)


def test_invalid_login(m):
    _check(login(m, **manager(m, password="wrong")), "invalid_login")
    _check(login(m, **manager(m, username="nobody")), "invalid_login")


def test_missing_parameter(m):
    form = manager(m)
    del form["service"]
    _check(login(m, **form), "missing_parameter")
    del form["username"]
    _check(login(m, **form), "missing_parameter", {"(service)": "(username)"})


def test_service_not_available(m):
    _check(login(m, **manager(m, service="nope")), "service_not_available")


def test_site_admin_cannot_create_a_token_for_a_custom_service(m):
    _check(
        login(m, username="admin", password="Admin-pass1!", service="offload_service"),
        "cannot_create_token",
    )


def test_restricted_service_lists_no_users(m):
    _check(
        login(m, **manager(m, service="restricted_service")),
        "user_not_allowed",
        {"offload_service": "restricted_service"},
    )


def test_web_services_disabled(m):
    m.site.webservices_enabled = False
    _check(login(m, **manager(m)), "webservices_disabled")


def test_app_site_check_needs_no_credentials(m):
    _check(login(m, appsitecheck="1"), "app_site_check")


def test_learner_gets_a_new_mobile_token_reused_next_time(m):
    site = m.site
    learner = site.users[site.learner_ids[0]]
    form = {
        "username": learner.username,
        "password": learner.password,
        "service": "moodle_mobile_app",
    }
    first = login(m, **form).json()
    assert re.fullmatch(r"[0-9a-f]{32}", first["token"]) and first["token"] != site.token
    assert login(m, **form).json()["token"] == first["token"]
    info = m.post("core_webservice_get_site_info", token=first["token"]).json()
    assert info["userid"] == learner.id
    assert "core_user_update_users" not in [f["name"] for f in info["functions"]]
    body = m.post(
        "block_iomad_company_admin_get_companies",
        token=first["token"],
        params={"criteria": [{"key": "name", "value": ""}]},
    ).json()
    assert body["errorcode"] == "accessexception"
    body = login(m, **{**form, "service": "offload_service"}).json()
    assert body["errorcode"] == "cannotcreatetoken"


def test_suspended_user_cannot_log_in_and_maintenance_refuses(m):
    site = m.site
    learner = site.users[site.learner_ids[1]]
    learner.suspended = 1
    body = login(
        m, username=learner.username, password=learner.password, service="moodle_mobile_app"
    )
    assert body.json()["errorcode"] == "invalidlogin"
    site.maintenance = True
    assert login(m, **manager(m)).json()["errorcode"] == "sitemaintenance"


def test_password_set_by_update_users_logs_in(m):
    site = m.site
    learner = site.learner_ids[2]
    m.call("core_user_update_users", users=[{"id": learner, "password": "Tmp#2024-k7Qx"}])
    form = {
        "username": site.users[learner].username,
        "password": "Tmp#2024-k7Qx",
        "service": "moodle_mobile_app",
    }
    assert "token" in login(m, **form).json()


def test_token_requests_are_counted(m):
    m.site.reset_counts()
    login(m, appsitecheck="1")
    assert m.site.request_count == 1 and not m.site.requests_by_function
