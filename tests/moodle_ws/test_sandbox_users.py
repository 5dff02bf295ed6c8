"""Core function semantics: courses, contents, users, messages, site info."""

import requests

# --- courses --------------------------------------------------------------------------


def test_courses_by_field_modes(m):
    site = m.site
    every = m.call("core_course_get_courses_by_field")["courses"]
    assert [c["id"] for c in every] == sorted(site.courses)
    short = site.courses[3].shortname
    assert [
        c["id"]
        for c in m.call("core_course_get_courses_by_field", field="shortname", value=short)[
            "courses"
        ]
    ] == [3]
    ids = m.call("core_course_get_courses_by_field", field="ids", value="4,2,999")
    assert [c["id"] for c in ids["courses"]] == [4, 2]
    assert ids["warnings"] == [
        {
            "item": "course",
            "itemid": 999,
            "warningcode": "1",
            "message": "No access rights in course context",
        }
    ]
    cat = m.call("core_course_get_courses_by_field", field="category", value="2")["courses"]
    assert {c["categoryid"] for c in cat} == {2}
    body = m.error("core_course_get_courses_by_field", field="fullname", value="x")
    assert body["errorcode"] == "invalidparameter"


def test_courses_by_field_degrades_to_public_fields(m):
    m.site.capabilities.discard("moodle/course:view")
    body = m.call("core_course_get_courses_by_field", field="ids", value="2")
    course = body["courses"][0]
    assert "format" not in course and "enablecompletion" not in course
    assert body["warnings"][0]["warningcode"] == "1"


def test_get_courses_needs_course_view_and_includes_the_front_page(m):
    courses = m.call("core_course_get_courses")
    assert courses[0]["id"] == 1 and courses[0]["format"] == "site"
    assert courses[0]["showcompletionconditions"] is None
    m.site.capabilities.discard("moodle/course:view")
    body = m.error("core_course_get_courses", options={"ids": [2]})
    assert body["errorcode"] in ("nopermissions", "errorcoursecontextnotvalid")


def test_contents_modules_are_the_cmids(m):
    site = m.site
    sections = m.call(
        "core_course_get_contents",
        courseid=site.main_course_id,
        options=[{"name": "excludecontents", "value": "1"}],
    )
    cmids = [mod["id"] for s in sections for mod in s["modules"]]
    assert cmids == [a.id for a in site.course_activities(site.main_course_id)]
    assert all(mod["contents"] == [] for s in sections for mod in s["modules"])
    quiz = next(mod for s in sections for mod in s["modules"] if mod["modname"] == "quiz")
    assert quiz["completiondata"]["istrackeduser"] is False
    forum = next(mod for s in sections for mod in s["modules"] if mod["modname"] == "forum")
    assert "completiondata" not in forum


def test_contents_bad_option_is_errorinvalidparam(m):
    body = m.error(
        "core_course_get_contents",
        courseid=m.site.main_course_id,
        options=[{"name": "foo", "value": "1"}],
    )
    assert (body["errorcode"], body["message"]) == (
        "errorinvalidparam",
        'The param "foo" is invalid.',
    )


# --- users ------------------------------------------------------------------------------


def test_users_by_field_sorted_by_id_unknown_values_missing(m):
    site = m.site
    a, b = site.learner_ids[5], site.learner_ids[2]
    users = m.call("core_user_get_users_by_field", field="id", values=[a, 999999, b])
    assert [u["id"] for u in users] == sorted([a, b])
    emails = m.call("core_user_get_users_by_field", field="email", values=[site.users[a].email])
    assert [u["id"] for u in emails] == [a]


def test_hiddenuserfields_hide_suspended_and_access_unless_the_token_may_see_hidden_details(m):
    # user_get_user_details(): $CFG->hiddenuserfields applies without viewhiddendetails
    site, uid = m.site, m.site.learner_ids[0]
    site.users[uid].country, site.users[uid].city = "GB", "Leeds"
    site.hiddenuserfields = {"suspended", "lastaccess", "country"}
    [seen] = m.call("core_user_get_users_by_field", field="id", values=[uid])
    assert {"suspended", "lastaccess", "country", "city"} <= set(seen)
    site.capabilities.discard("moodle/user:viewhiddendetails")
    [hidden] = m.call("core_user_get_users_by_field", field="id", values=[uid])
    assert not {"suspended", "lastaccess", "country"} & set(hidden)
    assert hidden["city"] == "Leeds" and "firstaccess" in hidden
    # in a course the capability is moodle/course:viewhiddenuserfields
    options = [{"name": "userfields", "value": "id,lastaccess,country"}]
    cid = next(c for c, e in site.enrolments.items() if uid in e and c != 1)
    rows = m.call("core_enrol_get_enrolled_users", courseid=cid, options=options)
    assert all("lastaccess" in r for r in rows)
    site.capabilities.discard("moodle/course:viewhiddenuserfields")
    rows = m.call("core_enrol_get_enrolled_users", courseid=cid, options=options)
    assert all("lastaccess" not in r and "country" not in r for r in rows)


def test_without_viewdetails_only_course_contacts_and_the_token_user_are_returned(m):
    site = m.site
    learner, teacher = site.learner_ids[0], site.teacher_ids[0]
    wanted = [learner, teacher, site.token_user_id]
    site.capabilities.discard("moodle/user:viewdetails")
    found = m.call("core_user_get_users_by_field", field="id", values=wanted)
    contacts = {u for e in site.enrolments.values() for u, en in e.items() if en.roleid == 3}
    assert [u["id"] for u in found] == sorted(
        u for u in wanted if u in contacts or u == site.token_user_id
    )
    assert learner not in [u["id"] for u in found]


def test_auth_needs_viewalldetails(m):
    uid = m.site.learner_ids[0]
    [seen] = m.call("core_user_get_users_by_field", field="id", values=[uid])
    assert seen["auth"] == "manual"
    m.site.capabilities.discard("moodle/user:viewalldetails")
    [hidden] = m.call("core_user_get_users_by_field", field="id", values=[uid])
    assert "auth" not in hidden and hidden["suspended"] is False


def test_users_by_field_errors(m):
    m.site.debug = True
    body = m.error("core_user_get_users_by_field", field="firstname", values=["x"])
    assert body["errorcode"] == "codingerror"
    assert body["debuginfo"] == (
        "The search field 'firstname' is not supported, look at the web service documentation"
    )
    body = m.error("core_user_get_users_by_field", field="username", values=["Alice"])
    assert body["debuginfo"] == "The field 'username' value is invalid: Alice(cleaned value: alice)"


def test_get_users_like_warning_and_keyalreadyset(m):
    site = m.site
    found = m.call(
        "core_user_get_users",
        criteria=[{"key": "email", "value": "%@EXAMPLE.ORG"}, {"key": "city", "value": "x"}],
    )
    expected = sorted(
        u.id
        for u in site.users.values()
        if u.email.lower().endswith("@example.org") and not u.deleted
    )
    assert [u["id"] for u in found["users"]] == expected
    assert found["warnings"] == [
        {
            "item": "city",
            "warningcode": "invalidfieldparameter",
            "message": "The search key 'city' is not supported, look at "
            "the web service documentation",
        }
    ]
    body = m.error(
        "core_user_get_users", criteria=[{"key": "id", "value": "1"}, {"key": "id", "value": "2"}]
    )
    assert (body["errorcode"], body["message"]) == ("keyalreadyset", "error/keyalreadyset")


def test_update_users_warnings_password_and_preferences(m):
    site = m.site
    a, b = site.learner_ids[0], site.learner_ids[1]
    taken = site.users[b].email
    body = m.call(
        "core_user_update_users",
        users=[
            {
                "id": a,
                "password": "Tmp#2024-k7Qx",
                "suspended": 1,
                "preferences": [
                    {"type": "auth_forcepasswordchange", "value": "1"},
                    {"type": "not_a_preference", "value": "x"},
                ],
            },
            {"id": 999999, "suspended": 1},
            {"id": b, "email": site.users[a].email},
        ],
    )
    assert body == {
        "warnings": [
            {
                "item": "user",
                "itemid": 999999,
                "warningcode": "invaliduserid",
                "message": "Invalid user ID",
            },
            {
                "item": "user",
                "itemid": b,
                "warningcode": "useremailduplicate",
                "message": "Duplicate address",
            },
        ]
    }
    user = site.users[a]
    assert (user.password, user.suspended) == ("Tmp#2024-k7Qx", 1)
    assert user.preferences == {"auth_forcepasswordchange": "1"}
    assert site.users[b].email == taken


def test_force_password_change_is_ignored_for_the_token_user_itself(m):
    site = m.site
    m.call(
        "core_user_update_users",
        users=[
            {
                "id": site.token_user_id,
                "preferences": [{"type": "auth_forcepasswordchange", "value": "1"}],
            }
        ],
    )
    assert "auth_forcepasswordchange" not in site.token_user.preferences


def test_create_users_is_all_or_nothing(m):
    site = m.site
    before = len(site.users)
    body = m.error(
        "core_user_create_users",
        users=[
            {
                "username": "new.one",
                "firstname": "New",
                "lastname": "One",
                "email": "n1@example.com",
                "password": "Abc-12345",
            },
            {
                "username": site.users[site.learner_ids[0]].username,
                "firstname": "X",
                "lastname": "Y",
                "email": "n2@example.com",
                "password": "Abc-12345",
            },
        ],
    )
    assert body["errorcode"] == "invalidparameter"
    assert len(site.users) == before and "new.one" not in site.usernames
    made = m.call(
        "core_user_create_users",
        users=[
            {
                "username": "new.one",
                "firstname": "New",
                "lastname": "One",
                "email": "n1@example.com",
                "createpassword": 1,
            }
        ],
    )
    assert made == [{"id": max(site.users), "username": "new.one"}]
    assert site.users[made[0]["id"]].preferences["auth_forcepasswordchange"] == "1"


# --- messages -----------------------------------------------------------------------------


def test_messages_are_sent_by_the_token_user(m):
    site = m.site
    learner = site.learner_ids[0]
    sent = m.call(
        "core_message_send_instant_messages",
        messages=[
            {
                "touserid": learner,
                "text": "<p>Hi / there</p>",
                "textformat": 1,
                "clientmsgid": "c-1",
            }
        ],
    )
    assert sent[0]["msgid"] > 0 and sent[0]["useridfrom"] == site.token_user_id
    assert site.messages[-1]["useridto"] == learner


def test_message_failures_are_entries_not_exceptions(m):
    too_long = "x" * 4097
    sent = m.call(
        "core_message_send_instant_messages",
        messages=[{"touserid": m.site.learner_ids[0], "text": too_long}],
    )
    assert sent == [
        {
            "msgid": -1,
            "errormessage": "The message is longer than the maximum allowed.",
            "candeletemessagesforallusers": False,
        }
    ]


def test_unsupported_text_format_and_disabled_messaging(m):
    body = m.error(
        "core_message_send_instant_messages",
        messages=[{"touserid": m.site.learner_ids[0], "text": "x", "textformat": 3}],
    )
    assert body["errorcode"] == "formatnotsupported"
    m.site.messaging = False
    body = m.error("core_message_send_instant_messages", messages=[{"touserid": 1, "text": "x"}])
    assert body["errorcode"] == "disabled"


# --- site info ------------------------------------------------------------------------------


def test_site_info_lists_the_service_functions(m):
    site = m.site
    info = m.call("core_webservice_get_site_info")
    names = [f["name"] for f in info["functions"]]
    assert names == sorted(site.service.functions) and len(names) == 31
    assert all(isinstance(f["version"], str) for f in info["functions"])
    assert (info["userid"], info["siteurl"], info["release"]) == (
        site.token_user_id,
        m.server.url,
        "4.5.2 (Build: 20250210)",
    )
    site.remove_function("core_user_update_users")
    names = [f["name"] for f in m.call("core_webservice_get_site_info")["functions"]]
    assert "core_user_update_users" not in names
    assert m.error("core_user_update_users", users=[{"id": 1}])["errorcode"] == "accessexception"


def test_plain_get_of_the_wwwroot(m):
    assert requests.get(m.server.url + "/", timeout=10).status_code == 200
    assert requests.get(m.server.url + "/nope.php", timeout=10).status_code == 404
