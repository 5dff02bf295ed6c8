"""Core function semantics: enrolled users and completion."""

from tests.moodle_ws.test_sandbox import active_learner, enrolled, opts

# --- core_enrol_get_enrolled_users -----------------------------------------------------


def test_enrolled_users_lists_everyone_with_access_fields(m):
    site = m.site
    users = enrolled(m)
    assert [u["id"] for u in users] == sorted(site.enrolments[site.main_course_id])
    first = next(u for u in users if u["id"] == site.learner_ids[0])
    assert first["fullname"] == "Łukasz Żółć"
    assert {"lastaccess", "lastcourseaccess", "firstaccess", "email", "roles"} <= set(first)
    assert first["lastcourseaccess"] == site.enrolments[site.main_course_id][first["id"]].lastaccess


def test_onlyactive_uses_php_empty_so_false_is_true(m):
    site = m.site
    course = site.enrolments[site.main_course_id]
    suspended = {u for u, e in course.items() if e.status}
    assert suspended, "the seed suspends some enrolments"
    everyone = {u["id"] for u in enrolled(m)}
    for value in ("1", "false", "yes"):
        assert {u["id"] for u in enrolled(m, onlyactive=value)} == everyone - suspended
    for value in ("0", ""):
        assert {u["id"] for u in enrolled(m, onlyactive=value)} == everyone
    assert {u["id"] for u in enrolled(m, onlysuspended="1")} == suspended


def test_onlyactive_and_onlysuspended_together_is_a_coding_error(m):
    body = m.error(
        "core_enrol_get_enrolled_users",
        courseid=m.site.main_course_id,
        options=opts(onlyactive="1", onlysuspended="1"),
    )
    assert body["errorcode"] == "codingerror"


def test_userfields_returns_only_those_plus_id_and_fullname(m):
    users = enrolled(m, userfields="email, lastcourseaccess", limitnumber="3")
    assert all(list(u) == ["id", "fullname", "email", "lastcourseaccess"] for u in users)


def test_unknown_userfield_is_invaliduserfield(m):
    body = m.error(
        "core_enrol_get_enrolled_users",
        courseid=m.site.main_course_id,
        options=opts(userfields="id,foo"),
    )
    assert (body["errorcode"], body["message"]) == ("invaliduserfield", "Invalid user field: foo")


def test_unknown_userfield_on_an_empty_course_is_no_error(m):
    site = m.site
    cid = site.course_no_criteria_id
    for uid in list(site.enrolments[cid]):
        site.unenrol(cid, uid)
    assert (
        m.call("core_enrol_get_enrolled_users", courseid=cid, options=opts(userfields="foo")) == []
    )


def test_paging_covers_everyone_once_and_limitnumber_zero_is_all(m):
    every = [u["id"] for u in enrolled(m, userfields="id")]
    pages = []
    for start in range(0, len(every), 7):
        pages += [
            u["id"] for u in enrolled(m, userfields="id", limitfrom=str(start), limitnumber="7")
        ]
    assert pages == every
    assert [u["id"] for u in enrolled(m, userfields="id", limitnumber="0")] == every


def test_sorting_by_lastname_both_ways(m):
    site = m.site
    asc = enrolled(m, userfields="lastname", sortby="lastname", sortdirection="asc")
    keys = [(site.users[u["id"]].lastname.casefold(), u["id"]) for u in asc]
    assert keys == sorted(keys)
    desc = enrolled(m, userfields="lastname", sortby="lastname", sortdirection="DESC")
    assert [u["id"] for u in desc] == [u["id"] for u in reversed(asc)]


def test_bad_sortdirection_is_invalidparameter(m):
    body = m.error(
        "core_enrol_get_enrolled_users",
        courseid=m.site.main_course_id,
        options=opts(sortdirection="up"),
    )
    assert body["errorcode"] == "invalidparameter"


def test_unknown_option_names_are_ignored(m):
    assert enrolled(m, userfields="id", whatever="1") == enrolled(m, userfields="id")


def test_withcapability_and_groupid_filter(m):
    site = m.site
    teachers = enrolled(m, userfields="id", withcapability="moodle/course:update")
    assert [u["id"] for u in teachers] == site.teacher_ids
    group = next(g for g in site.groups.values() if g.courseid == site.main_course_id)
    members = enrolled(m, userfields="id", groupid=str(group.id))
    assert {u["id"] for u in members} == group.members


def test_enrolled_users_access_errors(m):
    site = m.site
    assert m.error("core_enrol_get_enrolled_users", courseid=999999)["errorcode"] == "invalidrecord"
    site.capabilities.discard("moodle/course:enrolreview")
    body = m.error(
        "core_enrol_get_enrolled_users", courseid=site.main_course_id, options=opts(onlyactive="1")
    )
    assert body["message"].endswith("(Review course enrolments).")
    site.capabilities.discard("moodle/course:viewparticipants")
    body = m.error("core_enrol_get_enrolled_users", courseid=site.main_course_id)
    assert body["message"].endswith("(View participants).")
    site.capabilities.discard("moodle/course:view")
    body = m.error("core_enrol_get_enrolled_users", courseid=site.main_course_id)
    assert body["errorcode"] == "errorcoursecontextnotvalid"


# --- core_completion_get_course_completion_status ------------------------------------


def status(m, courseid, userid):
    return m.post(
        "core_completion_get_course_completion_status", {"courseid": courseid, "userid": userid}
    ).json()


def test_course_completion_errors_in_moodle_order(m):
    site = m.site
    main, learner = site.main_course_id, active_learner(site)
    assert status(m, 999999, 999999)["errorcode"] == "invalidrecord"
    assert status(m, main, 999999)["errorcode"] == "invaliduser"
    assert status(m, main, site.deleted_user_id)["errorcode"] == "userdeleted"
    assert status(m, site.course_completion_disabled_id, learner)["errorcode"] == "cannotviewreport"
    assert status(m, main, site.outsider_user_id)["errorcode"] == "usernotenroled"
    site.enrolments[site.course_no_criteria_id][learner].status = 0
    assert status(m, site.course_no_criteria_id, learner)["errorcode"] == "nocriteriaset"
    site.capabilities.discard("report/completion:view")
    site.capabilities.discard("moodle/user:viewuseractivitiesreport")
    assert status(m, main, learner)["errorcode"] == "cannotviewreport"
    site.capabilities.discard("moodle/course:view")
    assert status(m, main, 999999)["errorcode"] == "invaliduser"
    assert status(m, main, learner)["errorcode"] == "requireloginerror"


def test_site_wide_completion_off_is_cannotviewreport(m):
    m.site.completion_enabled = False
    assert (
        status(m, m.site.main_course_id, active_learner(m.site))["errorcode"] == "cannotviewreport"
    )


def test_suspended_enrolment_is_not_tracked(m):
    site = m.site
    uid = next(u for u, e in site.enrolments[site.main_course_id].items() if e.status)
    assert status(m, site.main_course_id, uid)["errorcode"] == "usernotenroled"


def test_course_completion_follows_the_site_data(m):
    site = m.site
    main, learner = site.main_course_id, active_learner(site)
    cmids = site.courses[main].criteria
    for cmid in cmids:
        site.set_activity_state(cmid, learner, 0)
    site.set_course_completion(main, learner, None)
    body = status(m, main, learner)["completionstatus"]
    assert body["completed"] is False and body["aggregation"] == 1
    assert [c["timecompleted"] for c in body["completions"]] == [None] * len(cmids)
    assert {c["status"] for c in body["completions"]} == {"No"}
    site.set_activity_state(cmids[0], learner, 3, 1700000000)  # complete-fail counts
    site.set_course_completion(main, learner, 1700000100)
    body = status(m, main, learner)["completionstatus"]
    assert body["completed"] is True
    first = body["completions"][0]
    assert (first["type"], first["complete"], first["timecompleted"]) == (4, True, 1700000000)
    assert first["details"]["criteria"].startswith(f'<a href="{m.server.url}/mod/')


def test_second_course_aggregates_any(m):
    site = m.site
    course = site.courses[3]
    uid = next(u for u, e in site.enrolments[3].items() if e.status == 0 and e.roleid == 5)
    assert status(m, course.id, uid)["completionstatus"]["aggregation"] == 2


# --- core_completion_get_activities_completion_status --------------------------------


def activities(m, courseid, userid):
    return m.post(
        "core_completion_get_activities_completion_status", {"courseid": courseid, "userid": userid}
    ).json()


def test_activity_states_zero_to_three_and_their_details(m):
    site = m.site
    main = site.main_course_id
    states = set()
    for uid in site.learner_ids:
        if uid in site.enrolments[main]:
            for s in activities(m, main, uid)["statuses"]:
                states.add(s["state"])
                assert (s["timecompleted"] == 0) == (s["state"] == 0)
                if s["modname"] == "quiz" and s["state"] == 3:
                    assert s["isoverallcomplete"] is False
                    assert s["details"][1] == {
                        "rulename": "completionpassgrade",
                        "rulevalue": {"status": 3, "description": "Receive a passing grade"},
                    }
    assert states == {0, 1, 2, 3}
    tracked = [a.id for a in site.course_activities(main) if a.completion]
    assert [s["cmid"] for s in activities(m, main, site.learner_ids[0])["statuses"]] == tracked


def test_activities_empty_when_completion_disabled_and_permission_needed(m):
    site = m.site
    learner = site.learner_ids[0]
    assert activities(m, site.course_completion_disabled_id, learner)["statuses"] == []
    site.capabilities.discard("report/progress:view")
    body = activities(m, site.main_course_id, learner)
    assert body["message"].endswith("(View activity completion reports).")
    own = activities(m, site.main_course_id, site.token_user_id)["statuses"]
    assert own and all(s["istrackeduser"] is False for s in own)


def test_set_activity_state_is_seen_at_once(m):
    site = m.site
    cmid = site.courses[site.main_course_id].criteria[0]
    learner = site.learner_ids[0]
    site.set_activity_state(cmid, learner, 2, 1711111111)
    entry = next(
        s for s in activities(m, site.main_course_id, learner)["statuses"] if s["cmid"] == cmid
    )
    assert (entry["state"], entry["timecompleted"]) == (2, 1711111111)
