"""The Moodle client's edge cases against canned answers (`responses`): the encoding rules,
each error mapping, what is retried and what is not, and the batching limits.

Canned error bodies are Moodle's own, from tests/moodle_ws/reference/errors/ and token/.
"""

import json
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import requests
import responses

from moodle_ws import errors
from moodle_ws.client import ClientSettings, MoodleClient
from moodle_ws.encoding import criteria, encode, options

SITE = "https://lms.example.com"
REST = SITE + "/webservice/rest/server.php"
TOKEN = "f3a9c2e47b1d4e0c9a8b7c6d5e4f3a21"
EXAMPLES = Path(__file__).parent / "reference"


def example(name: str) -> bytes:
    """The raw response body of one of Moodle's example errors."""
    data = json.loads((EXAMPLES / "errors" / f"{name}.json").read_text())
    return data["response"]["body"].encode()


def form_of(call) -> list[tuple[str, str]]:
    return parse_qsl(call.request.body, keep_blank_values=True)


@pytest.fixture
def client():
    c = MoodleClient(ClientSettings(url=SITE, token=TOKEN, attempts=3, backoff=0, max_backoff=0))
    yield c
    c.close()


@pytest.fixture
def mocked():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


# --- encoding ----------------------------------------------------------------------------

ENCODING_CASES = [
    pytest.param({"courseid": 7}, [("courseid", "7")], id="int-canonical"),
    pytest.param({"flag": True, "other": False}, [("flag", "1"), ("other", "0")], id="bool-0-1"),
    pytest.param({"x": -1}, [("x", "-1")], id="negative-int"),
    pytest.param({"v": 0.5}, [("v", "0.5")], id="float"),
    pytest.param(
        {"users": [{"id": 5, "preferences": [{"type": "auth_forcepasswordchange", "value": "1"}]}]},
        [
            ("users[0][id]", "5"),
            ("users[0][preferences][0][type]", "auth_forcepasswordchange"),
            ("users[0][preferences][0][value]", "1"),
        ],
        id="nested-brackets",
    ),
    pytest.param(
        {"options": {"ids": [7, 9]}},
        [("options[ids][0]", "7"), ("options[ids][1]", "9")],
        id="named-key-in-object",
    ),  # fmt: skip
    pytest.param({"values": ["a", "b"]}, [("values[0]", "a"), ("values[1]", "b")], id="list"),
    pytest.param({"options": []}, [], id="empty-list-left-out"),
    pytest.param({"courseid": 7, "groupid": None}, [("courseid", "7")], id="none-left-out"),
    pytest.param({"name": "Łukasz"}, [("name", "Łukasz")], id="unicode-as-is"),
]


@pytest.mark.parametrize("params, expected", ENCODING_CASES)
def test_parameters_encode_as_php_bracket_keys(params, expected):
    assert encode(params) == expected


def test_option_booleans_are_1_and_0_because_moodle_reads_false_as_true():
    assert options(onlyactive=True, limitfrom=0, groupid=None) == [
        {"name": "onlyactive", "value": "1"},
        {"name": "limitfrom", "value": "0"},
    ]
    assert options(onlyactive=False) == [{"name": "onlyactive", "value": "0"}]


def test_criteria_are_key_value_pairs():
    assert criteria([("name", ""), ("id", 3)]) == [
        {"key": "name", "value": ""},
        {"key": "id", "value": "3"},
    ]


@pytest.mark.parametrize("bad", [object(), float("nan"), b"bytes"], ids=["object", "nan", "bytes"])
def test_values_moodle_cannot_read_are_refused_before_sending(bad):
    with pytest.raises((TypeError, ValueError)):
        encode({"x": bad})


def test_a_call_is_a_form_post_with_json_format_and_the_token_in_the_body(client, mocked):
    mocked.post(REST, body=b"[]", content_type="application/json")
    assert client.call("core_enrol_get_enrolled_users", {"courseid": 7}) == []
    call = mocked.calls[0]
    assert call.request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert form_of(call) == [
        ("wstoken", TOKEN), ("wsfunction", "core_enrol_get_enrolled_users"),
        ("moodlewsrestformat", "json"), ("courseid", "7"),
    ]  # fmt: skip
    assert TOKEN not in call.request.url


def test_the_token_never_appears_in_repr(client):
    assert TOKEN not in repr(client) + repr(client.settings)


def test_more_form_fields_than_max_input_vars_are_refused_not_truncated(client, mocked):
    with pytest.raises(ValueError, match="max_input_vars"):
        client.call("core_user_get_users_by_field", {"field": "id", "values": list(range(998))})
    assert not mocked.calls


# --- error mapping -----------------------------------------------------------------------

ERROR_CASES = [
    # (example file, function, params, exception class, words the admin must see)
    ("invalid_token", "core_webservice_get_site_info", {}, errors.InvalidToken, ["moodle.token"]),
    ("function_not_in_service", "core_enrol_get_enrolled_users", {"courseid": 7},
     errors.FunctionNotInService,
     ["add core_enrol_get_enrolled_users to the external service"]),
    ("unknown_function", "local_manireports_get_schedules", {}, errors.FunctionNotInstalled,
     ["local_manireports_get_schedules is not on this Moodle site"]),
    ("nopermissions", "core_enrol_get_enrolled_users", {"courseid": 7}, errors.MissingCapability,
     ["moodle/course:viewparticipants"]),
    ("completion_not_enabled", "core_completion_get_course_completion_status",
     {"courseid": 7, "userid": 5}, errors.CompletionNotEnabled,
     ["enable completion tracking for course 7"]),
    ("no_criteria", "core_completion_get_course_completion_status", {"courseid": 7, "userid": 5},
     errors.NoCompletionCriteria, ["completion criteria for course 7"]),
    ("user_not_enrolled_completion", "core_completion_get_course_completion_status",
     {"courseid": 7, "userid": 5}, errors.NotEnrolled, ["not enrolled"]),
    ("require_login", "core_completion_get_activities_completion_status",
     {"courseid": 7, "userid": 5}, errors.CourseNotAccessible, ["cannot enter the course"]),
    ("course_context_not_valid", "core_enrol_get_enrolled_users", {"courseid": 9},
     errors.CourseNotAccessible, ["course id:9"]),
    ("record_not_found_course", "core_enrol_get_enrolled_users", {"courseid": 999},
     errors.RecordNotFound, ["course"]),
    ("invalid_parameter_value", "core_enrol_get_enrolled_users", {"courseid": 7},
     errors.InvalidParameter, ["invalidparameter"]),
    ("user_suspended", "core_webservice_get_site_info", {}, errors.TokenUserRefused,
     ["suspended"]),
    ("token_expired", "core_webservice_get_site_info", {}, errors.AccessDenied,
     ["token may have expired"]),
    ("missing_rest_use_capability", "core_webservice_get_site_info", {}, errors.AccessDenied,
     ["webservice/rest:use"]),
    ("invalid_response", "core_user_update_users", {}, errors.InvalidResponse, ["return"]),
    ("php_error", "block_iomad_company_admin_unallocate_licenses", {}, errors.ServerError,
     ["delete_record", "error log"]),
    ("messaging_disabled", "core_message_send_instant_messages", {}, errors.MoodleAPIError,
     ["Messaging is disabled"]),
]  # fmt: skip


@pytest.mark.parametrize(
    "name, function, params, cls, words", ERROR_CASES, ids=[c[0] for c in ERROR_CASES]
)
def test_moodle_errors_map_by_errorcode_to_a_message_that_says_what_to_do(
    client, mocked, name, function, params, cls, words
):
    mocked.post(REST, body=example(name), content_type="application/json")
    with pytest.raises(cls) as info:
        client.call(function, params)
    for word in words:
        assert word in str(info.value)
    assert TOKEN not in str(info.value)
    assert len(mocked.calls) == 1  # none of these is retried


def test_mapping_uses_errorcode_not_the_exception_class_name(client, mocked):
    # Moodle 4.4 and older name the class without a namespace; 4.5+ with one.
    old = {"exception": "required_capability_exception", "errorcode": "nopermissions",
           "message": "Sorry, but you do not currently have permissions to do that (View participants)."}  # fmt: skip  # noqa: E501
    renamed = dict(old, exception="some\\future\\name")
    for body in (old, renamed):
        mocked.post(REST, json=body)
        with pytest.raises(errors.MissingCapability):
            client.call("core_enrol_get_enrolled_users", {"courseid": 7})


def test_403_with_an_empty_body_means_web_services_or_rest_are_disabled(client, mocked):
    mocked.post(REST, status=403, body=example("protocol_disabled"))
    with pytest.raises(errors.WebServicesDisabled, match="REST"):
        client.call("core_webservice_get_site_info")


def test_an_html_page_names_moodle_url(client, mocked):
    mocked.post(REST, body=b"<html><body>Login</body></html>", content_type="text/html")
    with pytest.raises(errors.MoodleProtocolError, match="moodle.url"):
        client.call("core_webservice_get_site_info")


def test_a_return_value_with_an_exception_key_among_others_is_data_not_an_error(client, mocked):
    mocked.post(REST, json={"exception": "x", "message": "y", "data": 1})
    assert client.call("some_function") == {"exception": "x", "message": "y", "data": 1}


# --- retries -----------------------------------------------------------------------------


def test_maintenance_mode_is_retried_then_succeeds(client, mocked):
    mocked.post(REST, body=example("site_maintenance"), content_type="application/json")
    mocked.post(REST, json={"ok": 1})
    assert client.call("core_webservice_get_site_info") == {"ok": 1}
    assert len(mocked.calls) == 2


def test_maintenance_that_lasts_raises_site_maintenance_after_the_attempts(client, mocked):
    mocked.post(REST, body=example("site_maintenance"), content_type="application/json")
    with pytest.raises(errors.SiteMaintenance, match="retried later"):
        client.call("core_webservice_get_site_info")
    assert len(mocked.calls) == 3


@pytest.mark.parametrize("status", [500, 502, 503])
def test_http_5xx_is_retried_for_a_read(client, mocked, status):
    mocked.post(REST, status=status, body=b"Bad gateway")
    mocked.post(REST, body=b"[]")
    assert client.call("core_enrol_get_enrolled_users", {"courseid": 7}) == []
    assert len(mocked.calls) == 2


def test_a_parameter_error_is_never_retried(client, mocked):
    mocked.post(REST, body=example("missing_parameter"), content_type="application/json")
    with pytest.raises(errors.InvalidParameter):
        client.call("core_enrol_get_enrolled_users", {})
    assert len(mocked.calls) == 1


def test_a_read_timeout_is_retried_for_a_read(client, mocked):
    mocked.post(REST, body=requests.exceptions.ReadTimeout("slow"))
    mocked.post(REST, body=b"[]")
    assert client.call("core_enrol_get_enrolled_users", {"courseid": 7}) == []


def test_a_write_whose_answer_was_lost_is_not_retried_so_nothing_is_sent_twice(client, mocked):
    mocked.post(REST, body=requests.exceptions.ReadTimeout("slow"))
    mocked.post(REST, json=[{"msgid": 1}])
    with pytest.raises(errors.MoodleUnavailable, match="moodle.timeout"):
        client.call("core_message_send_instant_messages", {"messages": [{"touserid": 5}]})
    assert len(mocked.calls) == 1


def test_a_write_is_retried_on_5xx_only_when_moodle_cannot_have_run_it(client, mocked):
    mocked.post(REST, status=503)
    with pytest.raises(errors.MoodleUnavailable, match="503"):
        client.call("core_user_update_users", {"users": [{"id": 5}]})
    assert len(mocked.calls) == 1


def test_a_write_refused_by_maintenance_is_retried(client, mocked):
    mocked.post(REST, body=example("site_maintenance"), content_type="application/json")
    mocked.post(REST, json={"warnings": []})
    assert client.call("core_user_update_users", {"users": [{"id": 5}]}) == {"warnings": []}


def test_a_refused_connection_is_retried_even_for_a_write():
    # Nothing listens on this port: the request never leaves, so a retry is safe.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = MoodleClient(ClientSettings(url=f"http://127.0.0.1:{port}", token=TOKEN, attempts=3,
                                    backoff=0, max_backoff=0))  # fmt: skip
    with pytest.raises(errors.MoodleUnavailable, match="cannot connect"):
        c.call("core_message_send_instant_messages", {"messages": [{"touserid": 5}]})
    assert c.tally.count == 3


# --- concurrency -------------------------------------------------------------------------


def test_at_most_max_concurrency_requests_are_in_flight():
    c = MoodleClient(ClientSettings(url=SITE, token=TOKEN, max_concurrency=2))
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def slow(_request):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return 200, {}, b"[]"

    with responses.RequestsMock() as rsps:
        rsps.add_callback(responses.POST, REST, callback=slow)
        threads = [threading.Thread(target=c.call, args=("f",)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert state["peak"] == 2
    assert c.tally.count == 8


# --- batching through tool_mobile_call_external_functions ------------------------------------


def batch_callback(fail_userids=(), not_in_service=False):
    """Answers like Moodle: runs requests in order and stops at the first failure."""
    seen = []

    def answer(request):
        form = dict(parse_qsl(request.body, keep_blank_values=True))
        seen.append(len(parse_qsl(request.body)))
        out = []
        i = 0
        while f"requests[{i}][function]" in form:
            args = json.loads(form[f"requests[{i}][arguments]"])
            if not_in_service:
                out.append({"error": True, "exception": json.dumps(
                    {"errorcode": "accessexception", "module": "webservice"})})  # fmt: skip
                break
            if args["userid"] in fail_userids:
                out.append({"error": True, "exception": json.dumps({
                    "message": "User is not enrolled in this course", "errorcode": "usernotenroled",
                    "link": SITE, "moreinfourl": "https://docs.moodle.org"})})  # fmt: skip
                break
            out.append({"error": False, "data": json.dumps({"userid": args["userid"]})})
            i += 1
        return 200, {}, json.dumps({"responses": out})

    return answer, seen


def test_a_batch_is_split_under_max_input_vars(client, mocked):
    answer, seen = batch_callback()
    mocked.add_callback(responses.POST, REST, callback=answer)
    calls = [("core_completion_get_course_completion_status", {"courseid": 7, "userid": u})
             for u in range(1, 1201)]  # fmt: skip
    results = client.call_batch(calls)
    assert [r["userid"] for r in results] == list(range(1, 1201))
    assert len(seen) == 3
    assert max(seen) <= 1000


def test_a_batch_resumes_after_the_call_moodle_stopped_at(client, mocked):
    answer, seen = batch_callback(fail_userids={3, 7})
    mocked.add_callback(responses.POST, REST, callback=answer)
    calls = [("core_completion_get_course_completion_status", {"courseid": 7, "userid": u})
             for u in range(1, 11)]  # fmt: skip
    results = client.call_batch(calls)
    assert len(results) == 10
    assert [i + 1 for i, r in enumerate(results) if isinstance(r, errors.NotEnrolled)] == [3, 7]
    assert [r["userid"] for r in results if isinstance(r, dict)] == [1, 2, 4, 5, 6, 8, 9, 10]
    assert len(seen) == 3  # stopped at 3, then at 7, then the rest


def test_an_inner_function_missing_from_the_service_raises_once(client, mocked):
    answer, seen = batch_callback(not_in_service=True)
    mocked.add_callback(responses.POST, REST, callback=answer)
    calls = [("core_completion_get_course_completion_status", {"courseid": 7, "userid": u})
             for u in range(1, 600)]  # fmt: skip
    with pytest.raises(errors.FunctionNotInService,
                       match="add core_completion_get_course_completion_status"):  # fmt: skip
        client.call_batch(calls)
    assert len(seen) == 1


# --- login/token.php ------------------------------------------------------------------------


def test_login_returns_the_token(client, mocked):
    mocked.post(SITE + "/login/token.php", json={"token": "a" * 32, "privatetoken": None})
    assert client.login("manager", "secret", "offload")["token"] == "a" * 32
    assert ("password", "secret") in form_of(mocked.calls[0])


@pytest.mark.parametrize(
    "name, words",
    [("invalid_login", "wrong username or password"), ("cannot_create_token", "Manage tokens"),
     ("service_not_available", "service shortname"), ("webservices_disabled", "disabled")],
)  # fmt: skip
def test_login_errors_have_their_own_shape_and_a_hint(client, mocked, name, words):
    data = json.loads((EXAMPLES / "token" / f"{name}.json").read_text())
    mocked.post(SITE + "/login/token.php", body=data["response"]["body"].encode())
    with pytest.raises(errors.LoginError, match=words) as info:
        client.login("manager", "secret-password", "offload")
    assert "secret-password" not in str(info.value)


def test_a_batch_carrying_a_write_is_not_retried_on_5xx(client, mocked):
    mocked.post(REST, status=503)
    calls = [("core_message_send_instant_messages", {"messages": [{"touserid": 5}]})]
    with pytest.raises(errors.MoodleUnavailable):
        client.call_batch(calls)
    assert len(mocked.calls) == 1


def test_a_batch_of_reads_is_retried_on_5xx(client, mocked):
    mocked.post(REST, status=503)
    mocked.post(REST, json={"responses": [{"error": False, "data": "[]"}]})
    assert client.call_batch([("core_enrol_get_enrolled_users", {"courseid": 7})]) == [[]]


# --- paging --------------------------------------------------------------------------------


def test_a_short_page_in_the_middle_of_a_course_does_not_end_the_participants(client, mocked):
    # Moodle pages first and then leaves out the users the token's user may not see, so
    # the first page of 3 can come back with 2 while more participants follow.
    from moodle_ws.functions import enrolled_users

    pages = {0: [1, 3], 3: [4, 5, 6], 6: [7], 9: []}

    def answer(request):
        form = dict(parse_qsl(request.body))
        names = {v: k.replace("[name]", "[value]") for k, v in form.items() if k.endswith("[name]")}
        ids = pages[int(form[names["limitfrom"]])]
        return 200, {}, json.dumps([{"id": i, "fullname": f"U{i}"} for i in ids])

    mocked.add_callback(responses.POST, REST, callback=answer)
    users = list(enrolled_users(client, 7, page_size=3))
    assert [u.id for u in users] == [1, 3, 4, 5, 6, 7]
    assert len(mocked.calls) == 4  # the empty page says the course has no more


def test_a_moodle_that_ignores_limitfrom_is_read_once(client, mocked):
    from moodle_ws.functions import enrolled_users

    everyone = json.dumps([{"id": i, "fullname": f"U{i}"} for i in (1, 2)])
    mocked.add(responses.POST, REST, body=everyone)
    assert [u.id for u in enrolled_users(client, 7, page_size=2)] == [1, 2]
    assert len(mocked.calls) == 2
