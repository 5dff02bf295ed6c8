"""Every client wrapper against the Moodle sandbox over real HTTP on 127.0.0.1."""

import math

import pytest

from moodle_ws import accounts, companion, completion, errors, functions, iomad
from moodle_ws.client import ClientSettings, MoodleClient, RequestTally
from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site

LEARNERS = 150


@pytest.fixture(scope="module")
def server():
    site = generate_site(SiteSpec(seed=7, learners=LEARNERS, courses=3, companies=2))
    with SandboxServer(site) as srv:
        srv.site = site
        yield srv


@pytest.fixture
def site(server):
    server.site.reset_counts()
    return server.site


def make_client(server, **kw) -> MoodleClient:
    settings = dict(url=server.url, token=server.site.token, attempts=3, backoff=0, max_backoff=0)
    settings.update(kw)
    return MoodleClient(ClientSettings(**settings))


@pytest.fixture
def client(server):
    c = make_client(server)
    yield c
    c.close()


def test_site_info_describes_the_token_user_and_its_service(client, site):
    info = functions.site_info(client)
    assert info.userid == site.token_user_id
    assert info.release and info.sitename
    for name in ("core_enrol_get_enrolled_users", completion.COURSE_FN, completion.ACTIVITIES_FN):
        assert info.has(name)


def test_enrolled_users_pages_give_each_participant_once_in_id_order(client, site):
    whole = list(functions.enrolled_users(client, site.main_course_id, page_size=5000))
    site.reset_counts()
    paged = list(functions.enrolled_users(client, site.main_course_id, page_size=17))
    assert paged == whole
    assert [u.id for u in paged] == sorted({u.id for u in paged})
    assert len(paged) >= LEARNERS * 0.9
    assert site.request_count == -(-len(paged) // 17) + 1  # the pages, then an empty one
    assert all(u.email and u.firstname and u.fullname for u in paged)
    assert all(u.lastcourseaccess is not None and u.lastaccess is not None for u in paged)


def test_suspended_participants_are_the_enrolments_onlyactive_leaves_out(client, site):
    cid = site.main_course_id
    tally = RequestTally()
    active = completion.active_participants(client, cid, page_size=1000, tally=tally)
    suspended = completion.suspended_participants(
        client, cid, [u.id for u in active], page_size=1000, tally=tally
    )
    enrolled = site.enrolments[cid]
    assert suspended == {u for u, e in enrolled.items() if e.status}
    assert suspended and len(active) + len(suspended) == len(enrolled)
    assert tally.count == 4  # one page each, and the empty page that ends it


def test_without_enrolreview_no_enrolment_is_taken_for_suspended(client, site, caplog):
    cid = site.main_course_id
    site.capabilities.discard("moodle/course:enrolreview")
    try:
        everyone = [u.id for u in functions.enrolled_users(client, cid)]
        got = completion.suspended_participants(
            client, cid, everyone, page_size=1000, tally=RequestTally()
        )
    finally:
        site.capabilities.add("moodle/course:enrolreview")
    assert got is None  # not "nobody": the run must tell the admin
    assert "suspended enrolments cannot be counted" in caplog.text


def test_accounts_show_suspended_and_auth_which_the_enrolled_users_call_does_not(client, site):
    cid = site.main_course_id
    a, b = sorted(site.enrolments[cid])[:2]
    site.users[a].suspended, site.users[b].auth = 1, "nologin"
    try:
        rows = client.call("core_enrol_get_enrolled_users", {"courseid": cid, "options": [
            {"name": "userfields", "value": "id,suspended,auth"}]})  # fmt: skip
        users = {u.id: u for u in functions.users_by_field(client, "id", [a, b])}
    finally:
        site.users[a].suspended, site.users[b].auth = 0, "manual"
    assert all("suspended" not in r and "auth" not in r for r in rows)  # Moodle strips them
    assert users[a].suspended is True and users[b].auth == "nologin"


def test_course_completion_status_reads_what_moodle_holds(client, site):
    users = list(functions.enrolled_users(client, site.main_course_id))
    done, todo = users[0].id, users[1].id
    site.set_course_completion(site.main_course_id, done, 1_760_000_000)
    site.set_course_completion(site.main_course_id, todo, None)
    a = functions.course_completion_status(client, site.main_course_id, done)
    b = functions.course_completion_status(client, site.main_course_id, todo)
    assert a.completed and a.timecompleted
    assert not b.completed and b.timecompleted is None


@pytest.mark.parametrize("state", [0, 1, 2, 3])
def test_activity_completion_states_0_to_3(client, site, state):
    userid = next(iter(functions.enrolled_users(client, site.main_course_id))).id
    before = functions.activities_completion_status(client, site.main_course_id, userid)
    cmid = before.statuses[0].cmid
    site.set_activity_state(cmid, userid, state)
    after = functions.activities_completion_status(client, site.main_course_id, userid)
    status = next(s for s in after.statuses if s.cmid == cmid)
    assert status.state == state
    assert status.is_complete == (state in (1, 2, 3))
    assert (status.timecompleted == 0) == (state == 0)


def test_courses_by_field(client, site):
    course = functions.course(client, site.main_course_id)
    assert course.id == site.main_course_id and course.fullname and course.is_accessible
    courses, _ = functions.courses_by_field(client, "ids", [site.main_course_id])
    assert [c.id for c in courses] == [site.main_course_id]
    assert functions.course(client, 987654) is None


def test_users_by_field_finds_users_and_leaves_out_unknown_ones(client, site):
    ids = [u.id for u in functions.enrolled_users(client, site.main_course_id)][:3]
    users = functions.users_by_field(client, "id", ids + [987654])
    assert [u.id for u in users] == sorted(ids)
    by_email = functions.users_by_field(client, "email", [users[0].email])
    assert [u.id for u in by_email] == [users[0].id]


def test_accounts_by_id_isolates_the_users_whose_profile_moodle_cannot_return(server, site):
    ids = sorted(site.enrolments[site.main_course_id])
    bad = {ids[7]: ("country", "U.K."), ids[100]: ("city", "<i>York</i>")}
    kept = {u: getattr(site.users[u], f) for u, (f, _) in bad.items()}
    client = make_client(server, max_input_vars=104)  # 100 ids a request
    try:
        for u, (f, v) in bad.items():
            setattr(site.users[u], f, v)
        found = accounts.accounts_by_id(client, ids)
    finally:
        for u, (f, _) in bad.items():
            setattr(site.users[u], f, kept[u])
        client.close()
    assert sorted(found.refused) == sorted(bad)
    assert all("invalidresponse" in why for why in found.refused.values())
    assert sorted(found.users) == sorted(set(ids) - set(bad))
    # each bad user costs its halvings: 2 per level of a 100-id request, 7 levels
    assert (
        site.requests_by_function["core_user_get_users_by_field"]
        <= math.ceil(len(ids) / 100) + 2 * 2 * 7
    )


def test_accounts_by_id_raises_any_other_error(client, site):
    site.remove_function("core_user_get_users_by_field")
    try:
        with pytest.raises(errors.FunctionNotInService):
            accounts.accounts_by_id(client, [site.learner_ids[0]])
    finally:
        site.add_function("core_user_get_users_by_field")


def test_update_users_sets_a_temporary_password_and_reports_unknown_users(client, site):
    userid = next(iter(functions.enrolled_users(client, site.main_course_id))).id
    warnings = functions.update_users(
        client, [functions.force_password_change(userid, "Tmp-9x!aa"), {"id": 987654}]
    )
    assert [(w.itemid, w.warningcode) for w in warnings] == [(987654, "invaliduserid")]


def test_instant_messages_one_call_each_with_failures_as_results(client, site):
    userid = next(iter(functions.enrolled_users(client, site.main_course_id))).id
    site.reset_counts()
    results = functions.send_instant_messages(
        client, [(userid, "<p>Hi</p>", "job1-1"), (987654, "<p>Hi</p>", "job1-2")]
    )
    assert results[0].ok and results[0].clientmsgid == "job1-1"
    assert not results[1].ok and "987654" in results[1].error
    assert site.request_count == 2


def test_iomad_companies_their_users_and_licences(client, site):
    companies = iomad.companies(client)
    assert len(companies) == 2
    users = iomad.company_users(client, companies[0].id)
    assert users and all(u.companyid == companies[0].id for u in users)
    assert len({u.id for u in users}) == len(users)
    for lic in iomad.licenses(client, companies[0].id):
        assert lic.allocation > 0
        detail = iomad.license_detail(client, lic.id)
        assert detail.id == lic.id and detail.courses


def test_companion_functions(client, site):
    schedules, _ = companion.get_schedules(client)
    assert schedules and {"id", "frequency", "timeofday", "timemodified"} <= set(schedules[0])
    assert all(s.email_provider in ("AWS", "CLOUDFLARE", "SYSTEM")
               for s in companion.get_cloud_settings(client))  # fmt: skip
    bulk = companion.get_course_completions(client, site.main_course_id)
    assert "completions" in bulk and "cmcompletions" in bulk
    userid = next(iter(functions.enrolled_users(client, site.main_course_id))).id
    assert companion.record_certificate(client, userid, site.main_course_id, "https://x/c/1", "j-1")
    assert site.recorded_certificates[-1]["url"] == "https://x/c/1"


def test_login_gives_a_token_that_works(client, site, server):
    username, password = site.login_user
    token = client.login(username, password, site.login_service)["token"]
    other = MoodleClient(ClientSettings(url=server.url, token=token))
    assert functions.site_info(other).username == username
    with pytest.raises(errors.LoginError, match="wrong username or password"):
        client.login(username, password + "x", site.login_service)


# --- whole-course completion by each method -------------------------------------------------


def pull(client, site, method):
    info = functions.site_info(client)
    site.reset_counts()
    users, result, requests = completion.learners_with_completion(
        client, site.main_course_id, site=info, activities=True, method=method
    )
    return users, result, requests


def test_the_three_methods_agree_and_the_bulk_one_takes_fewest_requests(client, site):
    results = {m: pull(client, site, m) for m in ("companion", "batch", "per_user")}
    users = results["companion"][0]
    n = len(users)
    first = results["companion"][1]
    assert first.completed, "the seeded course has completions"
    for _method, (_, result, _requests) in results.items():
        assert dict(result.completed).keys() == dict(first.completed).keys()
        assert {k: dict(v) for k, v in result.activity_states.items()} == {
            k: dict(v) for k, v in first.activity_states.items()
        }
    untracked = results["per_user"][1].untracked
    assert results["batch"][1].untracked == untracked
    assert set(site.teacher_ids) & {u.id for u in users} <= untracked
    assert site.request_count == results["per_user"][2]
    pages = -(-n // 1000) + 1  # the pages, then an empty one
    assert results["companion"][2] == pages + 1
    # Moodle stops a batch at each untracked learner; the rest goes in the next request.
    fewest = pages + math.ceil(2 * n / 498)
    assert fewest <= results["batch"][2] <= fewest + len(results["batch"][1].untracked)
    assert results["per_user"][2] == pages + 2 * n


def test_completion_is_read_fresh_each_time(client, site):
    info = functions.site_info(client)
    users = list(functions.enrolled_users(client, site.main_course_id))
    target = next(u.id for u in users if u.id not in site_completed(client, site, info))
    site.set_course_completion(site.main_course_id, target, 1_760_000_500)
    assert target in site_completed(client, site, info)


def site_completed(client, site, info):
    ids = [u.id for u in functions.enrolled_users(client, site.main_course_id)]
    return completion.course_completions(client, site.main_course_id, ids, site=info).completed


def test_completion_disabled_names_the_course_after_one_request(client, site):
    info = functions.site_info(client)
    courseid = site.completion_disabled_course_id
    ids = [u.id for u in functions.enrolled_users(client, courseid)]
    assert ids
    for method in ("companion", "batch", "per_user"):
        site.reset_counts()
        with pytest.raises(errors.CompletionNotEnabled, match=f"for course {courseid}"):
            completion.course_completions(client, courseid, ids, site=info, method=method)
        assert site.request_count <= (1 if method != "per_user" else 4 * 32)  # one window


def test_a_course_without_criteria_says_so(client, site):
    info = functions.site_info(client)
    courseid = site.no_criteria_course_id
    ids = [u.id for u in functions.enrolled_users(client, courseid)]
    with pytest.raises(errors.NoCompletionCriteria, match=f"for course {courseid}"):
        completion.course_completions(client, courseid, ids, site=info, method="batch")


def test_a_batch_larger_than_max_input_vars_loses_no_call(client, site):
    users = [u.id for u in functions.enrolled_users(client, site.main_course_id, only_active=True)
             if u.id not in site.teacher_ids]  # fmt: skip
    calls = [(completion.COURSE_FN, {"courseid": site.main_course_id, "userid": u})
             for u in (users * 9)[:1200]]  # fmt: skip
    site.reset_counts()
    answers = client.call_batch(calls)
    assert len(answers) == 1200 and not any(isinstance(a, Exception) for a in answers)
    assert site.request_count == 3


# --- errors from a real server ----------------------------------------------------------------


def test_a_function_removed_from_the_service_is_named(client, site):
    site.remove_function("core_enrol_get_enrolled_users")
    try:
        with pytest.raises(errors.FunctionNotInService, match="add core_enrol_get_enrolled_users"):
            list(functions.enrolled_users(client, site.main_course_id))
    finally:
        site.add_function("core_enrol_get_enrolled_users")


def test_a_missing_capability_is_named(client, site):
    site.capabilities.discard("moodle/course:viewparticipants")
    try:
        with pytest.raises(errors.MissingCapability, match="moodle/course:viewparticipants"):
            list(functions.enrolled_users(client, site.main_course_id))
    finally:
        site.capabilities.add("moodle/course:viewparticipants")


def test_an_unknown_token_names_the_config_key(server):
    c = MoodleClient(ClientSettings(url=server.url, token="0" * 32))
    with pytest.raises(errors.InvalidToken, match="moodle.token"):
        functions.site_info(c)


def test_disabled_protocol_says_so(client, site):
    site.protocol_enabled = False
    try:
        with pytest.raises(errors.WebServicesDisabled):
            functions.site_info(client)
    finally:
        site.protocol_enabled = True


def test_maintenance_is_retried_and_then_reported(client, site):
    site.maintenance = True
    try:
        with pytest.raises(errors.SiteMaintenance):
            functions.site_info(client)
        assert site.request_count == 3
    finally:
        site.maintenance = False


def test_a_503_is_retried_and_the_call_succeeds(client, site):
    site.fail_next("core_webservice_get_site_info", 2, status=503)
    assert functions.site_info(client).userid == site.token_user_id
    assert site.request_count == 3


def test_a_dropped_connection_is_retried_for_a_read(client, site):
    site.fail_next("core_webservice_get_site_info", 1, status="reset")
    assert functions.site_info(client).userid == site.token_user_id


def test_new_users_since_a_time_and_of_one_company(client, site):
    since = site.now() - 5
    created = functions.create_users(client, [
        {"username": f"new{i}", "firstname": f"New{i}", "lastname": "User",
         "email": f"new{i}@example.org", "password": "Start-123x"} for i in range(3)
    ])  # fmt: skip
    assert [name for _, name in created] == ["new0", "new1", "new2"]
    found = companion.get_new_users(client, since)
    assert [u.id for u in found] == [uid for uid, _ in created]
    assert found[0].auth == "manual" and found[0].email == "new0@example.org"
    company = min(site.companies)
    assert companion.get_new_users(client, since, company) == []
    with pytest.raises(errors.MoodleAPIError, match="invalidrecord"):
        companion.get_new_users(client, since, 987654)


def test_create_users_is_all_or_nothing(client, site):
    with pytest.raises(errors.MoodleAPIError, match="invalidparameter"):
        functions.create_users(client, [
            {"username": "fine1", "firstname": "A", "lastname": "B", "email": "fine1@example.org",
             "password": "Start-123x"},
            {"username": "fine1", "firstname": "A", "lastname": "B", "email": "dup@example.org",
             "password": "Start-123x"},
        ])  # fmt: skip
    assert "fine1" not in site.usernames


def test_a_temporary_password_logs_in_and_then_must_be_changed(server, client, site):
    userid, _ = functions.create_users(client, [
        {"username": "tempuser", "firstname": "T", "lastname": "U",
         "email": "tempuser@example.org", "password": "First-123x"}])[0]  # fmt: skip
    with pytest.raises(errors.MoodleAPIError, match="usernotupdated|invalidresponse"):
        functions.update_users(client, [functions.force_password_change(userid, "short")])
    assert not functions.update_users(
        client, [functions.force_password_change(userid, "Temp-456y!")]
    )
    with pytest.raises(errors.LoginError):
        client.login("tempuser", "First-123x", "moodle_mobile_app")
    token = client.login("tempuser", "Temp-456y!", "moodle_mobile_app")["token"]
    learner = make_client(server, token=token)
    try:
        with pytest.raises(errors.MoodleAPIError, match="forcepasswordchangenotice"):
            functions.site_info(learner)
    finally:
        learner.close()


def test_assign_users_puts_new_users_in_a_company(client, site):
    (userid, _), = functions.create_users(client, [
        {"username": "companynew", "firstname": "C", "lastname": "N",
         "email": "companynew@example.org", "password": "Start-123x"}])  # fmt: skip
    company = min(site.companies)
    assert iomad.assign_users(client, [userid, 987654], company) == {
        987654: "Invalid user ID: 987654"
    }
    assert iomad.assign_users(client, [userid], company) == {}  # already in: fine
    assert [u.id for u in companion.get_new_users(client, site.now() - 5, company)] == [userid]
