"""The dashboard's certificates page over real HTTP, signed in with a session cookie, on
every database backend: issued per course, found by learner or code with their download
and verify links, and revoking (CSRF, reason, read-only, company scoping), after which the
public /verify/{code} says revoked."""

import html
import re

import pytest
import requests

from sidecar import certificates
from sidecar.db.models import Certificate
from tests.sidecar.api_helpers import audit_events, make_job
from tests.sidecar.test_api_schedules import site  # noqa: F401 - the sandbox fixture
from tests.sidecar.test_pages_schedules import Pages, make_served, text


@pytest.fixture
def served(serve_app, db_url, tmp_path, site):  # noqa: F811
    api = make_served(serve_app, db_url, tmp_path, site)
    yield api
    api.runtime.close()


@pytest.fixture
def issued(served, tmp_path):
    """Two jobs, one per company: A (course 10) and B (course 11), learners 1 and 2 each
    (First1 Last1 <user1@example.org>...), a certificate each with its PDF on disk.
    {(job letter, userid): code}."""
    clock = served.clock
    a = make_job(clock, 2, company=served.companies[0], course=10)
    b = make_job(clock, 2, company=served.companies[1], course=11)
    codes = {}
    for letter, job, course in (("A", a, 10), ("B", b, 11)):
        (tmp_path / "certs" / job).mkdir(parents=True)
        for uid in (1, 2):
            codes[(letter, uid)] = certificates.reserve(job, uid, course, "local", clock()).code
            (tmp_path / "certs" / job / f"{uid}.pdf").write_bytes(b"%PDF-1.4 test")
    codes["jobs"] = {"A": a, "B": b}
    return codes


def found(page: str) -> list[str]:
    """The codes the page lists, in order."""
    return re.findall(r'<li class="cert" id="cert-([A-Z0-9]+)">', page)


def per_course(page: str) -> list[str]:
    table = re.search(r'<table class="per-course">.*?<tbody>(.*?)</tbody>', page, re.S)[1]
    return [text(r) for r in re.findall(r"<tr>(.*?)</tr>", table, re.S)]


def test_certificates_are_counted_per_course_and_found_by_learner_or_code(served, issued):
    viewer = Pages(served)
    page = viewer.get("/certificates").text
    assert per_course(page) == ["course 10 2 0 2", "course 11 2 0 2"]
    assert sorted(found(page)) == sorted(v for k, v in issued.items() if k != "jobs")
    one = issued[("A", 2)]
    by_name = viewer.get("/certificates", learner="first2").text
    assert sorted(found(by_name)) == sorted([issued[("A", 2)], issued[("B", 2)]])
    assert "First2 Last2 <user2@example.org> · user 2 · course 10 · issued 2026-12-01" in text(
        by_name
    )
    assert found(viewer.get("/certificates", learner="First1 last1").text) == found(
        viewer.get("/certificates", learner="USER1@example").text
    )
    assert len(found(viewer.get("/certificates", learner="First1 Last2").text)) == 0
    assert sorted(found(viewer.get("/certificates", learner="1").text)) == sorted(
        [issued[("A", 1)], issued[("B", 1)]]
    )
    by_code = viewer.get("/certificates", code=one.lower()).text
    assert found(by_code) == [one]
    assert f'<a href="/certificates/{one}">Download</a>' in by_code
    assert f'<a href="/verify/{one}">Verify</a>' in by_code
    assert requests.get(f"{served.url}/certificates/{one}", timeout=10).content.startswith(b"%PDF")
    assert {issued[("B", 1)], issued[("B", 2)]} == set(
        found(viewer.get("/certificates", course=11).text)
    )
    nothing = viewer.get("/certificates", learner="nobody-like-this").text
    assert found(nothing) == [] and "No certificate matches." in nothing
    assert viewer.get("/certificates", course="ten").status_code == 400


def test_a_company_manager_sees_and_revokes_only_their_company_s_certificates(served, issued):
    manager = Pages(served, "m", companies=[served.companies[0]])
    page = manager.get("/certificates").text
    assert per_course(page) == ["course 10 2 0 2"]
    assert sorted(found(page)) == sorted([issued[("A", 1)], issued[("A", 2)]])
    theirs = issued[("B", 1)]
    assert found(manager.get("/certificates", code=theirs).text) == []
    resp = manager.post(f"/certificates/{theirs}/revoke", reason="not ours")
    assert resp.status_code == 404 and f"no certificate {theirs}" in resp.text
    assert Certificate.get_by_id(theirs).revoked_at is None


def test_revoking_needs_csrf_a_reason_and_write_access(served, issued):
    code = issued[("A", 1)]
    admin = Pages(served)
    for csrf in (None, "wrong"):
        resp = admin.post(f"/certificates/{code}/revoke", csrf=csrf, reason="typo in name")
        assert resp.status_code == 403 and "CSRF" in resp.text
    resp = admin.post(f"/certificates/{code}/revoke", reason="   ")
    assert resp.status_code == 400 and "the reason is required" in text(resp.text)
    reader = Pages(served, "ro", read_only=True)
    page = reader.get("/certificates").text
    assert found(page) and "/revoke" not in page  # no form to press
    resp = reader.post(f"/certificates/{code}/revoke", reason="typo in name")
    assert resp.status_code == 403 and "read-only" in resp.text
    assert Certificate.get_by_id(code).revoked_at is None
    assert not audit_events("certificate_revoked")


def test_revoking_makes_verify_say_revoked_and_the_download_410_and_is_audited(served, issued):
    code = issued[("A", 2)]
    verify = f"{served.url}/verify/{code}"
    assert f"Certificate {code}: valid" in text(requests.get(verify, timeout=10).text)
    alice = Pages(served, "alice")
    page = alice.get("/certificates", code=code).text
    form = re.search(rf'<form method="post" action="/certificates/{code}/revoke"[^>]*>', page)[0]
    assert f'data-confirm="Revoke certificate {code} of First2 Last2?' in html.unescape(form)
    resp = alice.post(f"/certificates/{code.lower()}/revoke", reason="issued  by mistake")
    assert resp.status_code == 303
    assert resp.headers["Location"] == f"/certificates?code={code}&revoked={code}"
    after = alice.get(resp.headers["Location"]).text
    assert f"Certificate {code} is revoked: its verification page now says so" in text(after)
    assert f"{code} revoked" in text(after) and "Download" not in after
    assert "revoked 2026-12-01: issued by mistake" in text(after)
    assert per_course(after)[0] == "course 10 2 1 1"
    verified = text(requests.get(verify, timeout=10).text)
    assert f"Certificate {code}: revoked" in verified
    assert "Revoked on 2026-12-01: issued by mistake." in verified
    gone = requests.get(f"{served.url}/certificates/{code}", timeout=10)
    assert gone.status_code == 410 and f"Certificate {code} was revoked on 2026-12-01" in gone.text
    [(_, detail)] = audit_events("certificate_revoked")
    assert '"name": "alice"' in detail and '"via": "dashboard"' in detail
    assert '"reason": "issued by mistake"' in detail and f'"code": "{code}"' in detail
    again = alice.post(f"/certificates/{code}/revoke", reason="twice")
    assert again.status_code == 409 and "already revoked" in again.text
    assert alice.post("/certificates/NOSUCHCODE/revoke", reason="x").status_code == 404
    # ?revoked= names only a certificate that is revoked
    other = issued[("A", 1)]
    assert "is revoked" not in alice.get("/certificates", revoked=other).text


def zip_names(resp) -> list[str]:
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        assert zf.testzip() is None
        return sorted(zf.namelist())


def test_a_course_s_certificates_download_as_one_zip_within_the_viewer_s_companies(
    served, issued, tmp_path
):
    from sidecar.db.models import Recipient

    Recipient.update(status="sent").execute()  # delivered: issued
    a1, a2 = issued[("A", 1)], issued[("A", 2)]
    admin = Pages(served)
    page = admin.get("/certificates", course=10).text
    form = re.search(r'<form method="get" action="/certificates/courses/10.zip"[^>]*>', page)
    assert form and "Download course 10's certificates (ZIP)" in text(page)
    assert "/certificates/courses/" not in admin.get("/certificates").text  # no course chosen
    resp = admin.get("/certificates/courses/10.zip")
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/zip"
    assert (
        resp.headers["Content-Disposition"] == 'attachment; filename="course-10-certificates.zip"'
    )
    assert zip_names(resp) == [f"Last1_First1_2026-12-01_{a1}.pdf",
                               f"Last2_First2_2026-12-01_{a2}.pdf"]  # fmt: skip
    assert admin.get("/certificates/courses/10.zip", since="2026-12-02").status_code == 404
    assert admin.get("/certificates/courses/10.zip", since="soon").status_code == 400

    manager = Pages(served, "m", companies=[served.companies[0]])
    assert len(zip_names(manager.get("/certificates/courses/10.zip"))) == 2
    theirs = manager.get("/certificates/courses/11.zip")
    assert theirs.status_code == 404 and "course 11 has no issued, valid certificate" in text(
        theirs.text
    )
    reader = Pages(served, "ro", read_only=True)  # a download changes nothing
    assert reader.get("/certificates/courses/11.zip").status_code == 200

    token = served.token("co-a", company=served.companies[0], read_only=True)
    assert len(zip_names(token.get("/certificates/courses/10.zip"))) == 2
    assert token.get("/certificates/courses/11.zip").status_code == 404
    assert served.anonymous().get("/certificates/courses/10.zip").status_code == 401

    (tmp_path / "certs" / issued["jobs"]["A"] / "1.pdf").unlink()
    names = zip_names(admin.get("/certificates/courses/10.zip"))
    assert names == ["Last2_First2_2026-12-01_" + a2 + ".pdf", "MISSING.txt"]
    assert len(audit_events("certificates_zipped")) == 5
