"""server.php as a protocol: order of checks, error bodies byte for byte, headers."""

import json

import pytest
import requests

from moodle_ws.sandbox.model import CompanyUser
from tests.moodle_ws.test_sandbox import EXAMPLES, _form, example, make_moodle, replay

REST_HEADERS = {
    "Content-Type": "application/json",
    "Cache-Control": "private, must-revalidate, pre-check=0, post-check=0, max-age=0",
    "Pragma": "no-cache",
    "Expires": "Thu, 01 Jan 1970 00:00:00 GMT",
    "Accept-Ranges": "none",
    "Access-Control-Allow-Origin": "*",
}


@pytest.fixture
def m():
    """A site whose ids line up with the examples: course 7 and 9 exist, 11 has no criteria."""
    moodle = make_moodle(courses=8)
    site = moodle.site
    assert site.course_no_criteria_id == 11 and 101 in site.learner_ids
    yield moodle
    moodle.server.stop()


def _prepare(m, name: str) -> None:
    site = m.site
    if name in ("course_context_not_valid", "require_login"):
        site.capabilities.discard("moodle/course:view")
    elif name == "nopermissions":
        site.capabilities.discard("moodle/course:viewparticipants")
    elif name == "missing_rest_use_capability":
        site.capabilities.discard("webservice/rest:use")
    elif name == "messaging_disabled":
        site.messaging = False
    elif name == "site_maintenance":
        site.maintenance = True
    elif name == "token_expired":
        site.expire_token()
    elif name == "unknown_function":
        site.companion_installed = False
    elif name == "user_suspended":
        site.token_user.username = "svc_offload"
        site.token_user.suspended = 1
    elif name == "no_criteria":
        site.enrolments[11][101].status = 0
    elif name == "completion_not_enabled":
        site.enrolments[site.course_completion_disabled_id][101].status = 0
    elif name == "php_error":
        site.licenses[15].courses.append(7)
        site.users[101].suspended = 0
        site.company_users.append(CompanyUser(101, site.licenses[15].companyid, 9))
    elif name == "protocol_disabled":
        site.protocol_enabled = False


ERRORS = sorted(p.stem for p in (EXAMPLES / "errors").glob("*.json"))
SPECIAL = {
    "protocol_disabled",
    "xml_format_error",
    "user_not_enrolled_completion",
    "completion_not_enabled",
}


@pytest.mark.parametrize("name", ERRORS)
def test_error_body_is_byte_for_byte_the_example(m, name):
    ex = example(f"errors/{name}.json")
    _prepare(m, name)
    site = m.site
    if name == "user_not_enrolled_completion":
        form = [(k, str(site.outsider_user_id) if k == "userid" else v) for k, v in _form(ex)]
        response = requests.post(
            m.rest, data=[(k, site.token if k == "wstoken" else v) for k, v in form], timeout=30
        )
    elif name == "completion_not_enabled":
        form = [
            (k, str(site.course_completion_disabled_id) if k == "courseid" else v)
            for k, v in _form(ex)
        ]
        response = requests.post(
            m.rest, data=[(k, site.token if k == "wstoken" else v) for k, v in form], timeout=30
        )
    else:
        response = replay(m, ex, token_from_example=name in ("invalid_token", "xml_format_error"))
    expected = ex["response"]
    assert response.status_code == expected["status"]
    assert response.text == expected["body"]
    if name == "protocol_disabled":
        return
    if name == "xml_format_error":
        assert response.headers["Content-Type"] == "application/xml; charset=utf-8"
        return
    for header, value in REST_HEADERS.items():
        assert response.headers[header] == value
    assert list(response.json()) == list(expected["json"])  # key order


WITH_DEBUG = [
    n for n in ERRORS if "json_with_debug_normal" in example(f"errors/{n}.json")["response"]
]


@pytest.mark.parametrize("name", WITH_DEBUG)
def test_debuginfo_with_debugging_on_matches_the_example(m, name):
    ex = example(f"errors/{name}.json")
    _prepare(m, name)
    m.site.debug = True
    body = replay(m, ex).json()
    assert body == ex["response"]["json_with_debug_normal"]
    assert list(body) == ["exception", "errorcode", "message", "debuginfo"]


def test_developer_debugging_appends_debuginfo_to_the_message(m):
    ex = example("errors/missing_parameter.json")
    m.site.debug = "developer"
    assert replay(m, ex).json() == ex["response"]["json_with_debug_developer_and_debugdisplay"]


def test_nopermissions_has_no_debuginfo_even_with_debugging(m):
    m.site.debug = True
    m.site.capabilities.discard("moodle/course:viewparticipants")
    assert "debuginfo" not in m.error("core_enrol_get_enrolled_users", courseid=7)


def test_legacy_exception_names_knob_gives_the_4_4_names(m):
    ex = example("errors/missing_parameter.json")
    m.site.legacy_exception_names = True
    assert replay(m, ex).json() == ex["response"]["json_moodle_4_4_and_older"]


def test_expired_token_is_deleted_so_a_retry_gets_invalidtoken(m):
    m.site.expire_token()
    assert m.error("core_webservice_get_site_info")["errorcode"] == "accessexception"
    assert m.error("core_webservice_get_site_info")["errorcode"] == "invalidtoken"
    assert m.site.token not in m.site.tokens


@pytest.mark.parametrize(
    "state,code",
    [
        ("deleted", "wsaccessuserdeleted"),
        ("unconfirmed", "wsaccessuserunconfirmed"),
        ("nologin", "wsaccessusernologin"),
        ("expired", "wsaccessuserexpired"),
    ],
)
def test_token_user_states_are_refused(m, state, code):
    user = m.site.token_user
    if state == "deleted":
        user.deleted = 1
    elif state == "unconfirmed":
        user.confirmed = 0
    elif state == "nologin":
        user.auth = "nologin"
    else:
        m.site.password_expired_users.add(user.id)
    body = m.error("core_webservice_get_site_info")
    assert body["errorcode"] == code
    assert body["message"].endswith(f"username: {user.username}")


# --- order of checks: each earlier failure hides the later ones ------------------------


def test_order_1_protocol_before_token(m):
    m.site.protocol_enabled = False
    response = m.post("nope", token="bad")
    assert (response.status_code, response.text) == (403, "")


def test_order_1b_web_services_off_is_also_403(m):
    m.site.webservices_enabled = False
    assert m.post("core_webservice_get_site_info").status_code == 403


def test_order_2_token_before_maintenance_and_function(m):
    m.site.maintenance = True
    response = m.post("no_such_function", token="0" * 32)
    assert response.json()["errorcode"] == "invalidtoken"


def test_order_3_maintenance_before_user_state(m):
    m.site.maintenance = True
    m.site.token_user.suspended = 1
    assert m.error("core_webservice_get_site_info")["errorcode"] == "sitemaintenance"


def test_order_3b_maintenance_access_lets_the_token_user_in(m):
    m.site.maintenance = True
    m.site.capabilities.add("moodle/site:maintenanceaccess")
    assert m.call("core_webservice_get_site_info")["userid"] == m.site.token_user_id


def test_order_4_user_state_before_rest_use(m):
    m.site.token_user.suspended = 1
    m.site.capabilities.discard("webservice/rest:use")
    assert m.error("core_webservice_get_site_info")["errorcode"] == "wsaccessusersuspended"


def test_order_5_rest_use_before_function_name(m):
    m.site.capabilities.discard("webservice/rest:use")
    assert m.error(None)["errorcode"] == "accessexception"


def test_order_6_function_name_before_parameters(m):
    m.site.debug = True
    body = m.error(None, courseid="abc")
    assert (body["errorcode"], body["debuginfo"]) == ("invalidparameter", "Missing function name")
    assert m.error("no_such_function", courseid="abc")["errorcode"] == "invalidrecord"


def test_order_6b_wsfunction_zero_is_php_empty(m):
    m.site.debug = True
    assert m.error("0")["debuginfo"] == "Missing function name"


def test_order_7_service_before_parameters(m):
    m.site.remove_function("core_enrol_get_enrolled_users")
    assert (
        m.error("core_enrol_get_enrolled_users", courseid="abc")["errorcode"] == "accessexception"
    )
    m.site.add_function("core_enrol_get_enrolled_users")
    assert (
        m.error("core_enrol_get_enrolled_users", courseid="abc")["errorcode"] == "invalidparameter"
    )


def test_order_8_parameters_before_execution(m):
    m.site.capabilities.discard("moodle/course:viewparticipants")
    assert (
        m.error("core_enrol_get_enrolled_users", courseid="abc")["errorcode"] == "invalidparameter"
    )
    assert m.error("core_enrol_get_enrolled_users", courseid=7)["errorcode"] == "nopermissions"


def test_order_9_execution_before_return_cleaning(m):
    m.site.capabilities.discard("moodle/user:update")
    body = m.error("core_user_update_users", users=[{"id": 101, "password": "abc"}])
    assert body["errorcode"] == "nopermissions"
    m.site.capabilities.add("moodle/user:update")
    m.site.debug = True
    body = m.error("core_user_update_users", users=[{"id": 101, "password": "abc"}])
    assert body["errorcode"] == "invalidresponse"
    assert body["debuginfo"].startswith(
        "warnings => Invalid response value detected: warningcode => Invalid response value "
        'detected: Invalid external api response: the value is "<div>'
    )


def test_unexpected_keys_are_listed_in_order(m):
    m.site.debug = True
    body = m.error("core_webservice_get_site_info", b="1", a="2")
    assert body["debuginfo"] == "Unexpected keys (b, a) detected in parameter array."


def test_only_the_five_known_moodlewssetting_parameters_are_reserved(m):
    m.site.debug = True
    ok = m.post(
        "core_webservice_get_site_info",
        extra=[("moodlewssettingfilter", "1"), ("moodlewssettinglang", "de")],
    )
    assert ok.json()["lang"] == "de"
    body = m.post("core_webservice_get_site_info", extra=[("moodlewssettingfoo", "1")]).json()
    assert body["debuginfo"] == "Unexpected keys (moodlewssettingfoo) detected in parameter array."


def test_example_errors_are_all_covered():
    assert len(ERRORS) >= 25
    assert all(
        json.loads((EXAMPLES / "errors" / f"{n}.json").read_text())["response"] for n in ERRORS
    )
