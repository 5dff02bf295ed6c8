"""server.php on the wire: XML and JSON rendering as PHP writes them, and request
variables as PHP reads them (brackets, GET/POST merge, multipart, max_input_vars)."""

import pytest
import requests

from tests.moodle_ws.test_sandbox import free_seat, make_moodle


@pytest.fixture
def m():
    moodle = make_moodle(courses=8)
    yield moodle
    moodle.server.stop()


# --- formats ------------------------------------------------------------------------


def test_format_other_than_json_or_xml_answers_xml(m):
    response = m.post("core_webservice_get_site_info", fmt="JSON")
    assert response.headers["Content-Type"] == "application/xml; charset=utf-8"
    assert response.headers["Content-Disposition"] == 'inline; filename="response.xml"'
    assert response.text.startswith(
        '<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n<SINGLE>\n'
    )


def test_xml_success_rendering(m):
    params = {"userid": 101, "courseid": 7, "url": "https://x.example/c/1", "jobid": "j-1"}
    response = m.post("local_manireports_record_certificate", params, fmt=None)
    assert response.text == (
        '<?xml version="1.0" encoding="UTF-8" ?>\n<RESPONSE>\n<SINGLE>\n'
        '<KEY name="status"><VALUE>1</VALUE>\n</KEY>\n</SINGLE>\n</RESPONSE>\n'
    )


def test_xml_null_and_lists(m):
    text = m.post("core_course_get_courses", {"options": {"ids": [1]}}, fmt="xml").text
    assert '<KEY name="showcompletionconditions"><VALUE null="null"/>\n</KEY>' in text
    assert text.count("<MULTIPLE>") >= 1


def test_xml_error_with_debuginfo(m):
    m.site.debug = True
    text = m.post("core_enrol_get_enrolled_users", {"courseid": "abc"}, fmt=None).text
    assert "<ERRORCODE>invalidparameter</ERRORCODE>" in text
    assert (
        "<DEBUGINFO>courseid =&gt; Invalid parameter value detected: Invalid external api " in text
    )
    assert "&quot;abc&quot;" in text


# --- json_encode ------------------------------------------------------------------


def test_json_escapes_slashes_and_non_ascii_like_php(m):
    m.site.sitename = "Łódź / Academy"
    body = m.post("core_webservice_get_site_info").text
    assert '"sitename":"\\u0141\\u00f3d\\u017a \\/ Academy"' in body
    assert '"siteurl":"http:\\/\\/127.0.0.1:' in body
    assert '": ' not in body and '", "' not in body and "}, {" not in body  # compact separators


def test_single_bool_return_is_bare_true(m):
    lid, uid, cid = free_seat(m.site)
    body = m.post(
        "block_iomad_company_admin_allocate_licenses",
        {"licenses": [{"licenseid": lid, "userid": uid, "licensecourseid": cid}]},
    )
    assert body.text == "true"


def test_function_returning_nothing_answers_null(m):
    m.site.update_users_warnings = False  # Moodle < 4.0: update_users returns null
    body = m.post("core_user_update_users", {"users": [{"id": 101, "city": "Leeds"}]})
    assert body.text == "null"
    assert m.site.users[101].city == "Leeds"


def test_empty_declared_structure_answers_empty_list(m):
    params = {
        "template": "c.4.e.completion_course_user",
        "value": 1,
        "companyid": 4,
        "page": 0,
        "perpage": 30,
        "lang": "en",
    }
    assert m.post("local_iomad_restrict_email_template", params).text == "[]"


def test_missing_optional_key_absent_and_default_filled(m):
    msgs = m.call(
        "core_message_send_instant_messages", messages=[{"touserid": 999999, "text": "x"}]
    )
    assert msgs == [
        {
            "msgid": -1,
            "errormessage": "You cannot send a message to a user ID (999999) that doesn't exist.",
            "candeletemessagesforallusers": False,
        }
    ]


# --- PHP request variables --------------------------------------------------------


def test_get_works_and_post_wins(m):
    query = {
        "wstoken": m.site.token,
        "wsfunction": "core_course_get_courses_by_field",
        "moodlewsrestformat": "json",
        "field": "id",
        "value": "abc",
    }
    got = requests.get(m.rest, params={**query, "value": "7"}, timeout=30).json()
    assert [c["id"] for c in got["courses"]] == [7]
    both = requests.post(m.rest, params=query, data={"value": "9"}, timeout=30).json()
    assert [c["id"] for c in both["courses"]] == [9]


def test_json_body_is_ignored(m):
    body = {
        "wstoken": m.site.token,
        "wsfunction": "core_webservice_get_site_info",
        "moodlewsrestformat": "json",
    }
    response = requests.post(m.rest, json=body, timeout=30)
    assert "<ERRORCODE>invalidtoken</ERRORCODE>" in response.text  # nothing read: XML, no token


def test_multipart_body_is_read(m):
    fields = {
        "wstoken": (None, m.site.token),
        "wsfunction": (None, "core_user_get_users_by_field"),
        "moodlewsrestformat": (None, "json"),
        "field": (None, "id"),
        "values[0]": (None, "101"),
    }
    response = requests.post(m.rest, files=fields, timeout=30)
    assert [u["id"] for u in response.json()] == [101]


def test_bracket_keys_percent_encoded_appended_and_non_contiguous(m):
    raw = (
        f"wstoken={m.site.token}&wsfunction=core_user_get_users_by_field"
        "&moodlewsrestformat=json&field=id&values%5B7%5D=103&values%5B2%5D=101&values[]=102"
    )
    response = requests.post(
        m.rest, data=raw, timeout=30, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert [u["id"] for u in response.json()] == [101, 102, 103]


def test_named_key_inside_an_object(m):
    courses = m.call("core_course_get_courses", options={"ids": [9, 7]})
    assert [c["id"] for c in courses] == [7, 9]


def test_max_input_vars_truncates_silently(m):
    m.site.max_input_vars = 5
    fields = [("field", "id"), ("values[0]", "101"), ("values[1]", "102")]
    # five variables read: wstoken, wsfunction, moodlewsrestformat, field, values[0]
    users = m.post("core_user_get_users_by_field", extra=fields).json()
    assert [u["id"] for u in users] == [101]


def test_max_input_vars_counts_get_and_post_separately(m):
    m.site.max_input_vars = 3
    query = {"field": "id", "values[0]": "101", "values[1]": "102", "values[2]": "103"}
    data = {
        "wstoken": m.site.token,
        "wsfunction": "core_user_get_users_by_field",
        "moodlewsrestformat": "json",
    }
    users = requests.post(m.rest, params=query, data=data, timeout=30).json()
    assert [u["id"] for u in users] == [101, 102]


def test_max_input_vars_can_drop_the_token(m):
    m.site.max_input_vars = 2
    data = [
        ("wsfunction", "core_webservice_get_site_info"),
        ("moodlewsrestformat", "json"),
        ("wstoken", m.site.token),
    ]
    assert requests.post(m.rest, data=data, timeout=30).json()["errorcode"] == "invalidtoken"


def test_default_limit_is_1000_variables(m):
    data = [
        ("wstoken", m.site.token),
        ("wsfunction", "core_user_get_users_by_field"),
        ("moodlewsrestformat", "json"),
        ("field", "id"),
    ]
    data += [(f"values[{i}]", str(101 + (i % 50))) for i in range(1100)]
    users = requests.post(m.rest, data=data, timeout=30).json()
    assert len(users) == 50  # read up to values[995], every id 101..150 among them
    assert m.site.max_input_vars == 1000
