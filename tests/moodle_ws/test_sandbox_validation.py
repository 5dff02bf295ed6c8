"""validate_parameters over the wire: what passes, what fails, and the exact debuginfo."""

import json

import pytest

from tests.moodle_ws.test_sandbox import make_moodle


@pytest.fixture(scope="module")
def m():
    moodle = make_moodle(courses=8)
    moodle.site.debug = True
    yield moodle
    moodle.server.stop()


def _debuginfo(m, function, params):
    body = m.post(function, params).json()
    if isinstance(body, dict) and body.get("errorcode") == "invalidparameter":
        return body["debuginfo"]
    return None  # validation passed (the call may still fail later, for its own reasons)


def _type_error(key, value, ptype, outer=None):
    inner = (
        f"{key} => Invalid parameter value detected: Invalid external api parameter: "
        f'the value is "{value}", the server was expecting "{ptype}" type'
    )
    return f"{outer} => Invalid parameter value detected: {inner}" if outer else inner


INT_CASES = [
    ("7", True),
    ("-1", True),
    ("0", True),
    ("07", False),
    (" 7", False),
    ("7 ", False),
    ("7.0", False),
    ("", False),
    ("+7", False),
    ("abc", False),
    ("7abc", False),
    ("1e3", False),
    ("99999999999999999999", False),
    ("-0", False),
]


@pytest.mark.parametrize("value,ok", INT_CASES, ids=[repr(v) for v, _ in INT_CASES])
def test_param_int_only_canonical_integers(m, value, ok):
    got = _debuginfo(m, "core_enrol_get_enrolled_users", {"courseid": value})
    assert got == (None if ok else _type_error("courseid", value, "int"))


BOOL_CASES = [
    ("0", True),
    ("1", True),
    ("true", False),
    ("false", False),
    ("", False),
    ("yes", False),
    ("2", False),
    (" 1", False),
]


@pytest.mark.parametrize("value,ok", BOOL_CASES, ids=[repr(v) for v, _ in BOOL_CASES])
def test_param_bool_only_zero_or_one(m, value, ok):
    params = {
        "template": "c.4.e.welcome",
        "value": value,
        "companyid": 4,
        "page": 0,
        "perpage": 10,
        "lang": "en",
    }
    got = _debuginfo(m, "local_iomad_restrict_email_template", params)
    assert got == (None if ok else _type_error("value", value, "bool"))


TEXT_CASES = [
    (
        "core_user_get_users_by_field",
        {"field": "i_d", "values": [1]},
        "field",
        "i_d",
        "alpha",
        None,
    ),
    (
        "core_user_get_users_by_field",
        {"field": "id1", "values": [1]},
        "field",
        "id1",
        "alpha",
        None,
    ),
    (
        "core_course_get_contents",
        {"courseid": 7, "options": [{"name": "exclude_x", "value": "1"}]},
        "name",
        "exclude_x",
        "alphanum",
        "options",
    ),
    (
        "core_message_send_instant_messages",
        {"messages": [{"touserid": 101, "text": "x", "clientmsgid": "rem 1"}]},
        "clientmsgid",
        "rem 1",
        "alphanumext",
        "messages",
    ),
    (
        "core_message_send_instant_messages",
        {"messages": [{"touserid": 101, "text": "x", "clientmsgid": "rem.1"}]},
        "clientmsgid",
        "rem.1",
        "alphanumext",
        "messages",
    ),
    (
        "core_user_create_users",
        {
            "users": [
                {"username": "Dana", "firstname": "D", "lastname": "L", "email": "d@example.com"}
            ]
        },
        "username",
        "Dana",
        "username",
        "users",
    ),
    (
        "core_user_create_users",
        {
            "users": [
                {
                    "username": "dana",
                    "firstname": "D",
                    "lastname": "L",
                    "email": "d@example.com",
                    "lang": "xx",
                    "password": "Abc-1234",
                }
            ]
        },
        "lang",
        "xx",
        "lang",
        "users",
    ),
    (
        "core_user_create_users",
        {
            "users": [
                {"username": "dana", "firstname": "D", "lastname": "L", "email": " d@example.com"}
            ]
        },
        "email",
        " d@example.com",
        "raw_trimmed",
        "users",
    ),
    (
        "core_user_update_users",
        {"users": [{"id": 101, "firstname": "<b>Bo</b>"}]},
        "firstname",
        "<b>Bo</b>",
        "notags",
        "users",
    ),
]


@pytest.mark.parametrize(
    "function,params,key,value,ptype,outer",
    TEXT_CASES,
    ids=[f"{c[4]}-{c[3]!r}" for c in TEXT_CASES],
)
def test_values_that_cleaning_would_change_are_rejected(
    m, function, params, key, value, ptype, outer
):
    assert _debuginfo(m, function, params) == _type_error(key, value, ptype, outer)


PASSING = [
    (
        "alphanumext",
        "core_message_send_instant_messages",
        {"messages": [{"touserid": 101, "text": "x", "clientmsgid": "rem-101_x"}]},
    ),
    (
        "raw anything",
        "core_message_send_instant_messages",
        {
            "messages": [
                {"touserid": 101, "text": "<script>alert(1)</script> \u0141", "textformat": 1}
            ]
        },
    ),
    ("alpha empty", "core_course_get_courses_by_field", {"field": "", "value": ""}),
    (
        "lang known",
        "core_user_create_users",
        {
            "users": [
                {
                    "username": "dana",
                    "firstname": "D",
                    "lastname": "L",
                    "email": "dana@example.com",
                    "lang": "de",
                    "password": "Abc-1234x",
                }
            ]
        },
    ),
]


@pytest.mark.parametrize("name,function,params", PASSING, ids=[p[0] for p in PASSING])
def test_valid_values_pass(m, name, function, params):
    assert _debuginfo(m, function, params) is None


IPV = "Invalid parameter value detected"
STRUCTURE = [
    (
        "missing top-level",
        "core_enrol_get_enrolled_users",
        {},
        "Missing required key in single structure: courseid",
    ),
    (
        "missing nested",
        "core_user_update_users",
        {"users": [{"email": "x@example.com"}]},
        "users => Invalid parameter value detected: Missing required key in single structure: id",
    ),
    (
        "scalar for a list",
        "core_user_get_users_by_field",
        {"field": "id", "values": "abc"},
        "values => Invalid parameter value detected: Only arrays accepted. The bad value is: 'abc'",
    ),
    (
        "list for a scalar",
        "core_enrol_get_enrolled_users",
        {"courseid": [7]},
        f"courseid => {IPV}: Scalar type expected, array or object received.",
    ),
    (
        "scalar for an object",
        "core_user_update_users",
        {"users": ["5"]},
        "users => Invalid parameter value detected: Only arrays accepted. The bad value is: '5'",
    ),
    (
        "unknown nested key",
        "core_user_update_users",
        {"users": [{"id": 101, "foo": "1"}]},
        f"users => {IPV}: Unexpected keys (foo) detected in parameter array.",
    ),
    (
        "deep path",
        "core_user_update_users",
        {"users": [{"id": 101, "preferences": [{"type": "x"}]}]},
        f"users => {IPV}: preferences => {IPV}: Missing required key in single structure: value",
    ),
    (
        "required list cannot be empty",
        "core_user_get_users",
        {},
        "Missing required key in single structure: criteria",
    ),
]


@pytest.mark.parametrize("name,function,params,debuginfo", STRUCTURE, ids=[s[0] for s in STRUCTURE])
def test_structure_errors_and_their_paths(m, name, function, params, debuginfo):
    assert _debuginfo(m, function, params) == debuginfo


def test_defaults_are_applied(m):
    # textformat defaults to 0 (FORMAT_MOODLE): the text comes back through text_to_html.
    sent = m.call("core_message_send_instant_messages", messages=[{"touserid": 101, "text": "hi"}])
    assert sent[0]["text"] == '<div class="text_to_html">hi</div>'
    assert m.site.messages[-1]["format"] == 0


def _inner_exception(m, function, arguments):
    m.site.debug = "developer"
    try:
        body = m.call(
            "tool_mobile_call_external_functions",
            requests=[{"function": function, "arguments": json.dumps(arguments)}],
        )
    finally:
        m.site.debug = True
    response = body["responses"][0]
    return json.loads(response["exception"]) if response["error"] else json.loads(response["data"])


def test_null_where_not_allowed_is_rejected(m):
    got = _inner_exception(m, "core_user_update_users", {"users": [{"id": 101, "username": None}]})
    assert got["errorcode"] == "invalidparameter"
    assert got["debuginfo"] == _type_error("username", "", "username", "users")


def test_null_where_allowed_passes_validation(m):
    got = _inner_exception(
        m, "core_completion_get_course_completion_status", {"courseid": None, "userid": 101}
    )
    assert got["errorcode"] == "invalidrecord"  # validation passed; no course with id null


@pytest.mark.parametrize(
    "value,ok",
    [(7, True), ("7", True), (7.0, True), (7.5, False), (True, True), ("07", False)],
    ids=["int", "str", "float-integral", "float", "true", "leading-zero"],
)
def test_native_json_types_inside_tool_mobile_arguments(m, value, ok):
    got = _inner_exception(m, "core_course_get_contents", {"courseid": value})
    if ok:
        assert not (isinstance(got, dict) and got.get("errorcode") == "invalidparameter")
    else:
        assert got["errorcode"] == "invalidparameter"
