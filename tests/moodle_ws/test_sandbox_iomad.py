"""IOMAD, the companion functions, and tool_mobile_call_external_functions batching."""

import json

import pytest

from tests.moodle_ws.test_sandbox import active_learner, example, free_seat, make_moodle, replay


@pytest.fixture
def m():
    moodle = make_moodle(courses=8)
    yield moodle
    moodle.server.stop()


def crit(**values):
    return [{"key": k, "value": v} for k, v in values.items()]


# --- companies and departments ----------------------------------------------------------


def test_get_companies_like_semantics_and_listing_all(m):
    site = m.site
    every = m.call("block_iomad_company_admin_get_companies", criteria=crit(name=""))
    assert [c["id"] for c in every["companies"]] == sorted(site.companies)
    part = m.call("block_iomad_company_admin_get_companies", criteria=crit(name="WIND"))
    assert [c["name"] for c in part["companies"]] == ["Northwind Logistics"]
    exact = m.call("block_iomad_company_admin_get_companies", criteria=crit(id="5", suspended="0"))
    assert [c["id"] for c in exact["companies"]] == [5]
    odd = m.call("block_iomad_company_admin_get_companies", criteria=crit(colour="red"))
    assert odd["warnings"][0]["warningcode"] == "invalidfieldparameter"
    assert len(odd["companies"]) == len(site.companies)  # no valid criterion: everything


def test_get_companies_needs_criteria_and_unique_keys(m):
    assert m.error("block_iomad_company_admin_get_companies")["errorcode"] == "invalidparameter"
    body = m.error(
        "block_iomad_company_admin_get_companies",
        criteria=[{"key": "name", "value": "a"}, {"key": "name", "value": "b"}],
    )
    assert body["errorcode"] == "keyalreadyset"


def test_departments_tree_and_direct_members_only(m):
    site = m.site
    deps = m.call("block_iomad_company_admin_get_departments", criteria=crit(company="4"))
    tops = [d for d in deps["departments"] if d["parent"] == 0]
    assert len(tops) == 1 and all(d["company"] == 4 for d in deps["departments"])
    top = tops[0]["id"]
    users = m.call("block_iomad_company_admin_get_department_users", departmentids=[top])["users"]
    direct = sorted(r.userid for r in site.company_users if r.departmentid == top)
    assert [u["id"] for u in users] == direct
    every = m.call(
        "block_iomad_company_admin_get_department_users",
        departmentids=[d["id"] for d in deps["departments"]],
    )["users"]
    assert len(every) == sum(1 for r in site.company_users if r.companyid == 4)


def test_user_companies_and_the_broken_build_knob(m):
    site = m.site
    row = site.company_users[0]
    got = m.call("block_iomad_company_admin_get_user_companies", userid=row.userid)
    assert got["companies"][0]["id"] == row.companyid
    assert got["companies"][0]["departments"] == [
        {"id": row.departmentid, "name": site.departments[row.departmentid].name}
    ]
    site.iomad_user_companies_broken = True
    body = m.post("block_iomad_company_admin_get_user_companies", {"userid": row.userid}).json()
    assert body == {
        "exception": "Error",
        "message": 'Attempt to assign property "departments" on null',
    }


def test_iomad_capabilities_use_display_names(m):
    m.site.capabilities.discard("block/iomad_company_admin:company_add")
    body = m.error("block_iomad_company_admin_get_companies", criteria=crit(name=""))
    assert body["errorcode"] == "nopermissions"
    assert (
        body["message"]
        == "Sorry, but you do not currently have permissions to do that (Add a company)."
    )


def test_iomad_not_installed_means_unregistered(m):
    m.site.iomad_installed = False
    body = m.error("block_iomad_company_admin_get_companies", criteria=crit(name=""))
    assert body["errorcode"] == "invalidrecord"
    names = [f["name"] for f in m.call("core_webservice_get_site_info")["functions"]]
    assert not [n for n in names if "iomad" in n]


# --- licences -------------------------------------------------------------------------------


def test_license_info_skips_zero_allocations(m):
    site = m.site
    got = m.call("block_iomad_company_admin_get_license_info", criteria=crit(companyid="4"))
    ids = [x["id"] for x in got["licenses"]]
    assert ids == sorted(
        x.id for x in site.licenses.values() if x.companyid == 4 and x.allocation > 0
    )
    assert all(x["used"] == site.license_used(x["id"]) for x in got["licenses"])


def test_license_from_id_and_missing_license(m):
    got = m.call("block_iomad_company_admin_get_license_from_id", licenseid=15)
    names = [c["fullname"] for c in got["courses"]]
    assert names == sorted(names)
    body = m.error("block_iomad_company_admin_get_license_from_id", licenseid=999)
    assert body["message"] == "Can't find data record in database table companylicense."


def test_allocate_stops_at_the_first_failure_and_keeps_earlier_seats(m):
    site = m.site
    m.site.debug = True
    lid, uid, cid = free_seat(site)
    full = next(
        x
        for x in site.licenses.values()
        if 0 < x.allocation <= site.license_used(x.id) and x.expirydate > site.now()
    )
    member = next(
        r.userid
        for r in site.company_users
        if r.companyid == full.companyid and not site.users[r.userid].suspended
    )
    body = m.error(
        "block_iomad_company_admin_allocate_licenses",
        licenses=[
            {"licenseid": lid, "userid": uid, "licensecourseid": cid},
            {"licenseid": full.id, "userid": member, "licensecourseid": full.courses[0]},
        ],
    )
    assert body["debuginfo"] == f"License id={full.id} has no free slots"
    assert any(a.licenseid == lid and a.userid == uid for a in site.allocations)


def test_unallocate_reproduces_the_php_error_of_the_stored_code(m):
    site = m.site
    a = next(a for a in site.allocations if not a.isusing and not site.users[a.userid].suspended)
    seat = {"licenseid": a.licenseid, "userid": a.userid, "licensecourseid": a.licensecourseid}
    response = m.post("block_iomad_company_admin_unallocate_licenses", {"licenses": [seat]})
    assert response.text == example("errors/php_error.json")["response"]["body"]
    site.iomad_unallocate_broken = False
    assert (
        m.post("block_iomad_company_admin_unallocate_licenses", {"licenses": [seat]}).text == "true"
    )
    assert a not in site.allocations


def test_check_enrolment_and_licence_revoke(m):
    site = m.site
    learner = active_learner(site)
    got = m.call(
        "block_iomad_company_admin_check_enrolment",
        criteria=[
            {"userid": learner, "courseid": site.main_course_id},
            {"userid": 999999, "courseid": site.main_course_id},
        ],
    )
    assert got == [{"userid": learner, "enrolled": True}, {"userid": 999999, "enrolled": False}]
    body = m.error(
        "local_iomad_licenserevoke_user_course",
        companyid=4,
        userid=learner,
        courseid=site.main_course_id,
        trackid=1,
        licenseid=15,
    )
    assert body["errorcode"] in ("invalidrecord", "nopermissions")


# --- companion ------------------------------------------------------------------------------


def test_companion_course_completions_match_the_site(m):
    site = m.site
    main = site.main_course_id
    got = m.call("local_manireports_get_course_completions", courseid=main)
    done = site.course_completions[main]
    active = {u for u, e in site.enrolments[main].items() if e.status == 0 and e.roleid == 5}
    assert got["completions"] == [
        {"userid": u, "timecompleted": done[u]} for u in sorted(done) if u in active
    ]
    assert len(got["completions"]) < len(done)  # a suspended enrolment's completion is left out
    rows = [
        (a.id, u, s, t)
        for a in site.course_activities(main)
        for u, (s, t) in sorted(site.cm_states.get(a.id, {}).items())
        if s > 0
    ]
    assert [
        (c["cmid"], c["userid"], c["state"], c["timemodified"]) for c in got["cmcompletions"]
    ] == rows
    assert {c["state"] for c in got["cmcompletions"]} == {1, 2, 3}


def test_companion_errors_like_core(m):
    site = m.site
    body = m.error("local_manireports_get_course_completions", courseid=999999)
    assert body["errorcode"] == "invalidrecord"
    body = m.error(
        "local_manireports_get_course_completions", courseid=site.course_completion_disabled_id
    )
    assert body["errorcode"] == "cannotviewreport"


def test_companion_prefix_and_installation(m):
    site = m.site
    site.set_companion_prefix("local_reports")
    assert m.call("local_reports_get_cloud_settings")["companies"] == site.cloud_settings
    assert m.error("local_manireports_get_cloud_settings")["errorcode"] == "invalidrecord"
    site.companion_installed = False
    assert m.error("local_reports_get_schedules")["errorcode"] == "invalidrecord"


def test_record_certificate_is_recorded(m):
    site = m.site
    learner = site.learner_ids[0]
    got = m.call(
        "local_manireports_record_certificate",
        userid=learner,
        courseid=site.main_course_id,
        url="https://offload.example/certificates/X1",
        jobid="job-42",
    )
    assert got == {"status": True}
    entry = site.recorded_certificates[-1]
    assert (entry["userid"], entry["url"], entry["jobid"]) == (
        learner,
        "https://offload.example/certificates/X1",
        "job-42",
    )


def test_schedules_are_valid_contract_values(m):
    schedules = m.call("local_manireports_get_schedules")["schedules"]
    assert schedules and all(
        s["frequency"] in ("daily", "weekly", "monthly", "custom") for s in schedules
    )
    assert all(
        s["audience"] in ("enrolled", "inactive", "not_completed", "completed") for s in schedules
    )


# --- tool_mobile_call_external_functions -----------------------------------------------


def batch(m, *requests_):
    return m.call("tool_mobile_call_external_functions", requests=list(requests_))


def test_batch_answers_json_in_json_and_stops_at_the_first_error(m):
    site = m.site
    learner = active_learner(site)
    main = site.main_course_id
    site.reset_counts()
    got = batch(
        m,
        {
            "function": "core_completion_get_course_completion_status",
            "arguments": json.dumps({"courseid": main, "userid": learner}),
        },
        {
            "function": "core_completion_get_course_completion_status",
            "arguments": json.dumps({"courseid": main, "userid": site.outsider_user_id}),
        },
        {"function": "core_webservice_get_site_info"},
    )
    assert [r["error"] for r in got["responses"]] == [False, True]
    assert json.loads(got["responses"][0]["data"])["completionstatus"]["completions"]
    inner = json.loads(got["responses"][1]["exception"])
    assert inner == {
        "message": "User is not enrolled in this course",
        "errorcode": "usernotenroled",
        "link": f"{m.server.url}/",
        "moreinfourl": "https://docs.moodle.org/405/en/error/completion/usernotenroled",
    }
    assert '"link":"http:\\/\\/127.0.0.1' in got["responses"][1]["exception"]
    assert site.requests_by_function["tool_mobile_call_external_functions"] == 1
    assert site.request_count == 1
    assert site.inner_requests_by_function["core_completion_get_course_completion_status"] == 2
    assert site.inner_requests_by_function["core_webservice_get_site_info"] == 0


def test_batch_inner_function_not_in_service_matches_the_example(m):
    ex = example("tool_mobile_call_external_functions__notinservice.json")
    response = replay(m, ex)
    assert response.text == ex["response"]["body"]


def test_batch_invalid_json_arguments_become_empty(m):
    m.site.debug = "developer"
    got = batch(m, {"function": "core_course_get_contents", "arguments": "{courseid: 7"})
    inner = json.loads(got["responses"][0]["exception"])
    assert inner["debuginfo"] == "Missing required key in single structure: courseid"
    assert list(inner) == ["message", "errorcode", "backtrace", "link", "moreinfourl", "debuginfo"]


def test_batch_inner_debuginfo_needs_developer_debugging(m):
    m.site.debug = True
    got = batch(m, {"function": "core_course_get_contents", "arguments": "{}"})
    assert "debuginfo" not in json.loads(got["responses"][0]["exception"])


def test_batch_data_missing_when_inner_returns_null(m):
    m.site.update_users_warnings = False
    got = batch(
        m,
        {
            "function": "core_user_update_users",
            "arguments": json.dumps({"users": [{"id": m.site.learner_ids[0], "city": "York"}]}),
        },
    )
    assert got == {"responses": [{"error": False}]}


def test_batch_per_request_settings(m):
    got = batch(
        m,
        {"function": "core_webservice_get_site_info", "settinglang": "de"},
        {"function": "core_webservice_get_site_info"},
    )
    langs = [json.loads(r["data"])["lang"] for r in got["responses"]]
    assert langs == ["de", "en"]


def test_batch_needs_itself_in_the_service(m):
    m.site.remove_function("tool_mobile_call_external_functions")
    body = m.error(
        "tool_mobile_call_external_functions",
        requests=[{"function": "core_webservice_get_site_info"}],
    )
    assert body["errorcode"] == "accessexception"


def test_companion_license_allocations_since_a_time_by_company_and_licence(m):
    site = m.site
    fn = "local_manireports_get_license_allocations"
    every = m.call(fn, since=0)["allocations"]
    assert len(every) == len(site.allocations) and every[0] == {
        "licenseid": every[0]["licenseid"], "userid": every[0]["userid"],
        "licensecourseid": every[0]["licensecourseid"], "issuedate": every[0]["issuedate"],
        "isusing": every[0]["isusing"],
        "companyid": site.licenses[every[0]["licenseid"]].companyid,
    }  # fmt: skip
    assert every == sorted(every, key=lambda r: (r["issuedate"], r["licenseid"], r["userid"],
                                                 r["licensecourseid"]))  # fmt: skip
    newest = max(a.issuedate for a in site.allocations)
    assert {r["issuedate"] for r in m.call(fn, since=newest)["allocations"]} == {newest}
    company = max(site.companies)
    mine = m.call(fn, since=0, companyid=company)["allocations"]
    assert mine and {r["companyid"] for r in mine} == {company}
    lid = mine[0]["licenseid"]
    assert {r["licenseid"] for r in m.call(fn, since=0, licenseid=lid)["allocations"]} == {lid}
    assert m.error(fn)["errorcode"] == "invalidparameter"  # since is required
    site.capabilities.discard("local/manireports:manage")
    assert m.error(fn, since=0)["errorcode"] == "nopermissions"
