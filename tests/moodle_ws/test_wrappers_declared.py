"""Every wrapper sends only what Moodle declares, in a form Moodle's validation accepts.

The declarations are Moodle's own (`moodle_ws/sandbox/functions.json`, derived from its PHP
source, the file the sandbox serves from): an undeclared key, a missing required key, a
boolean other than 0/1 or a non-canonical integer would be refused by a real site with
`invalidparameter`.
"""

import json
import re
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import responses

import moodle_ws.sandbox
from moodle_ws import companion, completion, functions, iomad
from moodle_ws.client import ClientSettings, MoodleClient

SITE = "https://lms.example.com"
REST = SITE + "/webservice/rest/server.php"
SPEC = Path(moodle_ws.sandbox.__file__).parent / "functions.json"
RESERVED = {"wstoken", "wsfunction", "moodlewsrestformat"}
INT = re.compile(r"^(0|-?[1-9][0-9]*)$")


def declarations() -> dict[str, dict]:
    data = json.loads(SPEC.read_text())
    return {f["name"]: f["parameters"] for f in data["functions"] + data["iomad"]["functions"]}


DECLARED = declarations()


def check_value(node: dict, value: str, where: str) -> None:
    t = node["type"]
    if t == "PARAM_INT":
        assert INT.match(value), f"{where}: {value!r} is not a canonical integer"
    elif t == "PARAM_BOOL":
        assert value in ("0", "1"), f"{where}: {value!r} is not 0 or 1"
    elif t == "PARAM_ALPHA":
        assert re.fullmatch(r"[A-Za-z]*", value), f"{where}: {value!r} is not PARAM_ALPHA"
    elif t == "PARAM_ALPHANUMEXT":
        assert re.fullmatch(r"[A-Za-z0-9_-]*", value), f"{where}: {value!r} not ALPHANUMEXT"


def check_form(function: str, form: list[tuple[str, str]]) -> None:
    """Fail unless every field is declared and well formed and every required key is sent."""
    root = DECLARED[function]
    sent: dict = {}
    for key, value in form:
        if key in RESERVED:
            continue
        parts = re.findall(r"^[^\[]+|(?<=\[)[^\]]*(?=\])", key)
        node, where, tree = root, "", sent
        for part in parts:
            where = f"{where}[{part}]" if where else part
            if node["kind"] == "object":
                assert part in node["keys"], f"{function}: {where} is not declared"
                node = node["keys"][part]
            elif node["kind"] == "list":
                assert part.isdigit(), f"{function}: {where}: a list index must be a number"
                node = node["items"]
            tree = tree.setdefault(part, {})
        assert node["kind"] == "value", f"{function}: {where} is a {node['kind']}, not a value"
        check_value(node, value, f"{function}: {where}")
    for name, child in root["keys"].items():
        if child["required"] == "required":
            assert name in sent, f"{function}: required {name} was not sent"


@pytest.fixture
def client():
    c = MoodleClient(ClientSettings(url=SITE, token="t" * 32, attempts=1))
    yield c
    c.close()


def record(mocked, body):
    mocked.post(REST, body=json.dumps(body))


USER = {"id": 5, "fullname": "Ana Silva", "firstname": "Ana", "lastname": "Silva",
        "email": "ana@example.org"}  # fmt: skip
COURSE_STATUS = {"completionstatus": {"completed": False, "aggregation": 1, "completions": []},
                 "warnings": []}  # fmt: skip
LICENSE = {"id": 3, "name": "L", "allocation": 5, "validlength": 30, "expirydate": 0, "used": 1,
           "companyid": 1, "parentid": 0}  # fmt: skip

CASES = [
    ("site_info", lambda c: functions.site_info(c),
     {"sitename": "S", "userid": 2, "functions": []}),
    ("enrolled_users", lambda c: list(functions.enrolled_users(c, 7, page_size=10)), [USER]),
    ("enrolled_users_active", lambda c: functions.enrolled_users_page(
        c, 7, limitnumber=5, only_active=True), [USER]),
    ("course_completion_status", lambda c: functions.course_completion_status(c, 7, 5),
     COURSE_STATUS),
    ("activities_completion_status",
     lambda c: functions.activities_completion_status(c, 7, 5), {"statuses": []}),
    ("courses_by_field_ids", lambda c: functions.courses_by_field(c, "ids", [7, 9]),
     {"courses": [], "warnings": []}),
    ("courses_by_field_all", lambda c: functions.courses_by_field(c), {"courses": []}),
    ("users_by_field", lambda c: functions.users_by_field(c, "id", [5, 6]), [USER]),
    ("update_users", lambda c: functions.update_users(
        c, [functions.force_password_change(5, "Tmp-9x!aa")]), {"warnings": []}),
    ("send_instant_messages", lambda c: functions.send_instant_messages(
        c, [(5, "<p>Hi</p>", "job-1_5")]), [{"msgid": 9, "clientmsgid": "job-1_5"}]),
    ("companies", lambda c: iomad.companies(c), {"companies": []}),
    ("departments", lambda c: iomad.departments(c, 2), {"departments": []}),
    ("department_users", lambda c: iomad.department_users(c, [1, 2]), {"users": []}),
    ("user_companies", lambda c: iomad.user_companies(c, 4),
     {"companies": [{"id": 4, "name": "C", "departments": [{"id": 9, "name": "C"}]}]}),
    ("licenses", lambda c: iomad.licenses(c, 2), {"licenses": [LICENSE]}),
    ("license_detail", lambda c: iomad.license_detail(c, 3), {"license": LICENSE, "courses": []}),
    ("batch", lambda c: c.call_batch([(completion.COURSE_FN, {"courseid": 7, "userid": 5})]),
     {"responses": [{"error": False, "data": json.dumps(COURSE_STATUS)}]}),
]  # fmt: skip


@pytest.mark.parametrize("name, run, answer", CASES, ids=[c[0] for c in CASES])
def test_each_wrapper_sends_only_declared_well_formed_parameters(client, name, run, answer):
    with responses.RequestsMock() as mocked:
        record(mocked, answer)
        run(client)
        assert mocked.calls, "no request was made"
        for call in mocked.calls:
            form = parse_qsl(call.request.body, keep_blank_values=True)
            function = dict(form)["wsfunction"]
            check_form(function, form)


def test_the_checker_itself_catches_an_undeclared_key_and_a_bad_boolean():
    with pytest.raises(AssertionError, match="not declared"):
        check_form("core_enrol_get_enrolled_users", [("courseid", "7"), ("_", "1")])
    with pytest.raises(AssertionError, match="not 0 or 1"):
        check_form("core_user_update_users", [("users[0][id]", "5"),
                                              ("users[0][suspended]", "true")])  # fmt: skip
    with pytest.raises(AssertionError, match="required courseid"):
        check_form("core_enrol_get_enrolled_users", [])


def test_companion_wrappers_use_the_configured_prefix(client):
    with responses.RequestsMock() as mocked:
        record(mocked, {"schedules": [], "warnings": []})
        companion.get_schedules(client, "local_custom")
        assert dict(parse_qsl(mocked.calls[0].request.body))["wsfunction"] == (
            "local_custom_get_schedules"
        )


def test_license_allocations_sends_since_and_only_the_filters_given(client):
    with responses.RequestsMock() as mocked:
        record(mocked, {"allocations": [], "warnings": []})
        record(mocked, {"allocations": [], "warnings": []})
        companion.get_license_allocations(client, 1764633600)
        companion.get_license_allocations(client, 5, companyid=4, licenseid=15, prefix="local_x")
        first, second = (dict(parse_qsl(c.request.body)) for c in mocked.calls)
    assert first["wsfunction"] == "local_manireports_get_license_allocations"
    assert first["since"] == "1764633600" and "companyid" not in first
    assert second["wsfunction"] == "local_x_get_license_allocations"
    assert (second["companyid"], second["licenseid"]) == ("4", "15")
