"""The JSON API's jobs and recipients over real HTTP on every database backend: what each
endpoint answers, who may call it, its errors and its pagination."""

import base64
import csv
import io
import json
import re
from datetime import timedelta

import pytest
from openapi_spec_validator import validate

from sidecar import jobs as ledger
from sidecar import privacy
from sidecar.db import store
from sidecar.db.models import Job, Recipient
from sidecar.web import api as api_module
from sidecar.web.app import ROUTES
from sidecar.web.openapi import DOCUMENT
from tests.sidecar.api_helpers import audit_events, make_job, statuses


def _example(match: re.Match) -> str:
    """A value the route's converter takes: 1, or the first choice of an `any(...)`."""
    choices = re.fullmatch(r"<any\(([^,)]+).*", match.group(0))
    return choices.group(1).strip() if choices else "1"


ALL_ROUTES = [
    (method, re.sub(r"<[^>]+>", _example, rule.rule))
    for rule in ROUTES.iter_rules() if rule.rule.startswith("/api/v1/")
    for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
]  # fmt: skip


def test_openapi_describes_every_api_route_and_no_other():
    served = set()
    for rule in ROUTES.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:[^:>]+:)?(\w+)>", r"{\1}", rule.rule)[len("/api/v1") :]
            served |= {(m.lower(), path) for m in rule.methods - {"HEAD", "OPTIONS"}}
    described = {(m, p) for p, ops in DOCUMENT["paths"].items() for m in ops}
    assert described == served
    assert DOCUMENT["openapi"] == "3.1.0"
    validate(DOCUMENT)  # raises naming what breaks the OpenAPI 3.1 schema
    refs = set(re.findall(r"#/components/schemas/(\w+)", repr(DOCUMENT)))
    assert refs <= set(DOCUMENT["components"]["schemas"])


def test_openapi_json_is_served_without_credentials(api):
    resp = api.anonymous().get("/openapi.json")
    assert resp.status_code == 200 and resp.json() == DOCUMENT


@pytest.mark.parametrize("method, path", [r for r in ALL_ROUTES if "openapi" not in r[1]])
def test_every_endpoint_answers_401_without_credentials(api, method, path):
    caller = api.anonymous()
    resp = caller.http.request(method, f"{api.url}{path}", timeout=10)
    assert resp.status_code == 401
    assert resp.json() == {"error": "sign in, or send Authorization: Bearer <token>",
                           "status": 401}  # fmt: skip


def test_jobs_list_shows_counts_and_filters_by_status_type_course_company_and_date(api, clock):
    a = make_job(clock, 3, company=2, course=10, failed=[1], sent=[2, 3])
    clock.advance(3600)
    b = make_job(clock, 2, company=3, course=11, type="send_reminder")
    admin = api.session()
    every = admin.get("/jobs").json()
    assert [j["id"] for j in every["items"]] == [b, a] and every["next_cursor"] is None
    first = every["items"][1]
    assert first["status"] == "partial_failure" and first["company"] == 2
    assert first["counts"] == {"failed": 1, "sent": 2}
    assert first["progress"] == {"recipients": 3, "done": 3, "open": 0, "sent": 2, "failed": 1}
    for query, expected in [
        ({"status": "partial_failure"}, [a]), ({"type": "send_reminder"}, [b]),
        ({"status": "pending,queued,processing,retry_pending"}, [b]),
        ({"status": ["completed", "partial_failure"]}, [a]),
        ({"course": "10"}, [a]), ({"company": "3"}, [b]),
        ({"since": (clock() - timedelta(minutes=1)).isoformat()}, [b]),
        ({"until": (clock() - timedelta(minutes=1)).isoformat() + "Z"}, [a]),
        ({"since": "2025-11-18", "until": "2025-11-19"}, [b, a]),
        ({"since": "2025-11-19"}, []),
    ]:  # fmt: skip
        assert [j["id"] for j in admin.get("/jobs", **query).json()["items"]] == expected, query


def test_jobs_list_walks_every_job_once_across_pages_even_with_equal_times(api, clock):
    made = set()
    for i in range(23):
        made.add(make_job(clock, 1))
        if i % 3 == 0:
            clock.advance(1)  # three jobs share each creation time
    seen = [j["id"] for j in api.session().walk("/jobs", limit=4)]
    assert len(seen) == 23 and set(seen) == made


@pytest.mark.parametrize("query, named", [
    ({"status": "done"}, "status"), ({"course": "ten"}, "course"), ({"company": "1.5"}, "company"),
    ({"since": "yesterday"}, "since"), ({"until": "2025-13-01"}, "until"),
    ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"), ({"limit": "x"}, "limit"),
    ({"stauts": "failed"}, "stauts"),
])  # fmt: skip
def test_a_bad_filter_is_400_naming_it(api, query, named):
    resp = api.session().get("/jobs", **query)
    assert resp.status_code == 400 and resp.json()["status"] == 400
    assert resp.json()["error"].startswith(f"{named}: "), resp.json()


def cursor_of(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_a_bad_cursor_is_400(api, clock):
    job = make_job(clock, 3)
    for _ in range(3):
        make_job(clock, 1)
    admin = api.session()
    jobs_cursor = admin.get("/jobs", limit=1).json()["next_cursor"]
    assert jobs_cursor
    for path, cursor in [("/jobs", "not a cursor"), ("/jobs", jobs_cursor[:-3]),
                         ("/jobs", "W10"), (f"/jobs/{job}/recipients", jobs_cursor),
                         ("/certificates", jobs_cursor), ("/jobs", "A" * 600),
                         (f"/jobs/{job}/recipients", cursor_of(["recipients", 2**70])),
                         (f"/jobs/{job}/recipients", cursor_of(["recipients", "1"]))]:  # fmt: skip
        resp = admin.get(path, cursor=cursor)
        assert resp.status_code == 400 and resp.json()["error"].startswith("cursor: "), cursor


def test_a_company_token_sees_only_its_company_and_another_company_s_job_is_404(api, clock):
    ours = make_job(clock, 3, company=2, failed=[1], sent=[2, 3])
    theirs = make_job(clock, 3, company=3, failed=[1], sent=[2, 3])
    site = make_job(clock, 2)  # no company: only a principal of every company sees it
    for caller in (api.token("co2", company=2), api.session("manager", companies=[2])):
        assert [j["id"] for j in caller.get("/jobs").json()["items"]] == [ours]
        assert caller.get("/jobs", company=3).json()["items"] == []
        assert caller.get(f"/jobs/{ours}").status_code == 200
        for job in (theirs, site, "no-such-job"):
            for path in ("", "/recipients", "/export"):
                resp = caller.get(f"/jobs/{job}{path}")
                assert resp.status_code == 404 and resp.json()["error"] == f"no job {job}"
            for action in ("retry", "cancel"):
                assert caller.post(f"/jobs/{job}/{action}").status_code == 404
    assert statuses(theirs) == {1: "failed", 2: "sent", 3: "sent"}
    assert not audit_events("job_retry", "job_cancelled")
    assert {j["id"] for j in api.token("all").get("/jobs").json()["items"]} == {ours, theirs, site}


def test_job_show_has_counts_route_reason_batches_and_totals(api, clock):
    job_id = make_job(clock, 250, failed=[1, 2], sent=range(3, 200))
    body = api.session().get(f"/jobs/{job_id}").json()
    assert body["counts"] == store.recipient_counts([job_id])[job_id]
    assert body["progress"]["open"] == 51 and body["progress"]["failed"] == 2
    assert body["route"] == "local" and body["route_reason"] == "local delivery"
    assert [(b["index"], b["size"]) for b in body["batches"]] == [(0, 200), (1, 50)]
    assert body["total"] == 250 and body["run"] is None and body["status"] == "pending"
    short = api.session().get(f"/jobs/{job_id[:8]}").json()  # a unique prefix, like the CLI
    assert short["id"] == job_id


def test_job_show_says_what_retention_erased_and_how_many_purge_user_erased(api, clock, tmp_path):
    old = make_job(clock, 3, sent=(1, 2, 3))
    legacy = make_job(clock, 2, sent=(1, 2))
    clock.advance(200 * 86400)
    privacy.run_retention(recipient_days=180, certificate_days=None, certificate_dir=tmp_path,
                          stores={}, now=clock(), perf=lambda: 0.0)  # fmt: skip
    # what ledgers written before held: a sentence
    Job.update(erased="addresses, names, variables and the addresses in errors of its "
               "recipients (retention: finished more than 90 days ago)").where(
        Job.id == legacy).execute()  # fmt: skip
    recent = make_job(clock, 3, sent=(1, 2, 3))
    privacy.purge_user(3, certificate_dir=tmp_path, stores={}, include_suppression=False,
                       now=clock())  # fmt: skip
    admin = api.session()
    at = clock().isoformat() + "Z"
    what = ["addresses", "names", "variables", "addresses in errors"]

    body = admin.get(f"/jobs/{old}").json()
    assert body["erased"] == {"at": at, "what": what,
                              "why": "retention: finished more than 180 days ago"}  # fmt: skip
    assert body["purged"] == 1 and body["counts"] == {"sent": 3}  # the counts stay
    assert admin.get(f"/jobs/{legacy}").json()["erased"] == {
        "at": at, "what": what, "why": "retention: finished more than 90 days ago"}  # fmt: skip
    body = admin.get(f"/jobs/{recent}").json()
    assert body["erased"] is None and body["purged"] == 1
    rows = admin.get(f"/jobs/{recent}/recipients").json()["items"]
    assert [r["userid"] > 0 for r in rows] == [False, True, True]  # the purged row sorts first
    assert [r["email"] for r in rows if r["userid"] > 0] == ["user1@example.org",
                                                             "user2@example.org"]  # fmt: skip


def test_recipients_walk_every_row_once_and_filter_by_status_and_search(api, clock):
    job_id = make_job(clock, 1234, failed=range(100, 1234, 100), sent=range(1, 50))
    admin = api.session()
    rows = admin.walk(f"/jobs/{job_id}/recipients", limit=100)
    assert [r["userid"] for r in rows] == list(range(1, 1235))
    assert rows[0] == {**rows[0], "email": "user1@example.org", "status": "sent"}
    failed = admin.walk(f"/jobs/{job_id}/recipients", status="failed", limit=3)
    assert [r["userid"] for r in failed] == list(range(100, 1234, 100))
    assert failed[0]["last_error"] == "smtp 550"
    both = admin.get(f"/jobs/{job_id}/recipients", status="failed,sent", limit=500).json()
    assert len(both["items"]) == 49 + 12 and both["next_cursor"] is None
    found = admin.get(f"/jobs/{job_id}/recipients", q="USER123@").json()["items"]
    assert [r["userid"] for r in found] == [123]
    named = admin.get(f"/jobs/{job_id}/recipients", q="last120", limit=500).json()["items"]
    assert [r["userid"] for r in named] == [120, *range(1200, 1210)]
    assert admin.get(f"/jobs/{job_id}/recipients", q="%").json()["items"] == []
    bad = admin.get(f"/jobs/{job_id}/recipients", status="lost")
    assert bad.status_code == 400 and bad.json()["error"].startswith("status: ")


def test_export_is_the_cli_s_csv(api, clock):
    job_id = make_job(clock, 1200, failed=[5], sent=[6])
    resp = api.session().get(f"/jobs/{job_id}/export")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert f'filename="job-{job_id}.csv"' in resp.headers["Content-Disposition"]
    cli = io.StringIO()
    ledger.export_csv(job_id, cli)
    assert resp.text.replace("\r\n", "\n") == cli.getvalue().replace("\r\n", "\n")
    assert len(list(csv.reader(io.StringIO(resp.text)))) == 1201


def test_retry_requeues_the_failed_and_the_audit_line_names_who(api, clock):
    job_id = make_job(clock, 4, failed=[1, 2], sent=[3, 4])
    resp = api.session("alice").post(f"/jobs/{job_id}/retry")
    assert resp.status_code == 200
    assert resp.json() == {"job_id": job_id, "requeued": 2, "message": "2 recipients re-queued"}
    assert statuses(job_id) == {1: "retry_pending", 2: "retry_pending", 3: "sent", 4: "sent"}
    [(_, detail)] = audit_events("job_retry")
    assert (
        '"name": "alice"' in detail and '"source": "local"' in detail and '"via": "api"' in detail
    )
    again = api.session("alice").post(f"/jobs/{job_id}/retry")
    assert again.status_code == 409 and "no failed recipient" in again.json()["error"]


def test_a_company_token_may_retry_its_own_company_s_job(api, clock):
    job_id = make_job(clock, 2, company=5, failed=[1], sent=[2])
    resp = api.token("co5", company=5).post(f"/jobs/{job_id}/retry")
    assert resp.status_code == 200 and resp.json()["requeued"] == 1
    [(_, detail)] = audit_events("job_retry")
    assert '"name": "co5"' in detail and '"source": "token"' in detail


def test_without_or_with_a_wrong_csrf_token_nothing_changes(api, clock):
    job_id = make_job(clock, 3, failed=[1], sent=[2, 3])
    pending = make_job(clock, 3)
    admin = api.session()
    for csrf in (None, "guess", ""):
        for path in (f"/jobs/{job_id}/retry", f"/jobs/{pending}/cancel"):
            resp = admin.post(path, csrf=csrf)
            assert resp.status_code == 403 and "CSRF" in resp.json()["error"]
    assert statuses(job_id) == {1: "failed", 2: "sent", 3: "sent"}
    assert Job.get_by_id(pending).status == "pending"
    assert not audit_events("job_retry", "job_cancelled")


def test_a_read_only_token_or_session_is_403_on_every_change_and_nothing_changes(api, clock):
    job_id = make_job(clock, 3, failed=[1], sent=[2, 3])
    pending = make_job(clock, 3)
    for caller in (api.token("monitor", read_only=True), api.session("viewer", read_only=True)):
        for path in (f"/jobs/{job_id}/retry", f"/jobs/{pending}/cancel",
                     "/certificates/ABC/revoke", "/schedules/1/run"):  # fmt: skip
            resp = caller.post(path)
            assert resp.status_code == 403 and "read-only" in resp.json()["error"], path
        assert caller.get(f"/jobs/{job_id}").status_code == 200  # reading is fine
    assert statuses(job_id) == {1: "failed", 2: "sent", 3: "sent"}
    assert Job.get_by_id(pending).status == "pending"
    assert not audit_events("job_retry", "job_cancelled")


def test_cancel_stops_what_is_not_delivered_and_a_finished_job_is_409(api, clock):
    job_id = make_job(clock, 5)
    Recipient.update(status="sent").where(Recipient.job == job_id, Recipient.userid == 1).execute()
    resp = api.token("ops").post(f"/jobs/{job_id}/cancel")
    assert resp.status_code == 200 and resp.json()["cancelled"] == 4
    assert Job.get_by_id(job_id).status == "cancelled"
    [(_, detail)] = audit_events("job_cancelled")
    assert '"name": "ops"' in detail
    again = api.token("ops2").post(f"/jobs/{job_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]


def test_a_method_not_allowed_is_405_with_allow(api, clock):
    job_id = make_job(clock, 1)
    resp = api.session().get(f"/jobs/{job_id}/retry")
    assert resp.status_code == 405 and resp.headers["Allow"] == "POST"


def test_the_dashboard_off_means_the_api_answers_404(serve_app):
    srv = serve_app(handle_callback=lambda raw, sig: {}, health=lambda: (True, {}))
    import requests

    for path in ("/api/v1/jobs", "/api/v1/openapi.json"):
        resp = requests.get(f"{srv.url}{path}", timeout=10)
        assert resp.status_code == 404 and "dashboard is off" in resp.json()["error"]


def test_the_api_rules_are_in_the_app_routes():
    served = {r.rule for r in ROUTES.iter_rules()}
    assert {r.rule for r in api_module.RULES} <= served
