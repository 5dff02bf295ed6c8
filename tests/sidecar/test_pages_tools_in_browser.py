"""The bulk tools on the Send page in headless Chromium (tests/browser.py), as an
administrator uses them against the Moodle sandbox: the re-engagement form, its preview,
the confirmation dialog, then the job's page while the daemon delivers to a real SMTP sink
(aiosmtpd on 127.0.0.1); back on the preview, there is nothing more to send."""

import pytest

from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site
from sidecar.db.models import Job, Recipient

from .test_pages_jobs_in_browser import daemon, sign_in, sink, wait_for  # noqa: F401


@pytest.fixture
def moodle():
    site = generate_site(SiteSpec(seed=11, learners=30, courses=2, companies=0))
    site.schedules[:] = []
    with SandboxServer(site) as server:
        server.site = site
        yield server


def test_a_re_engagement_is_previewed_confirmed_and_delivered_once_from_the_page(
    daemon,  # noqa: F811
    sink,  # noqa: F811
    moodle,
    page,
):
    server = sink()
    d = daemon(
        server.port, extra=f'[moodle]\nurl = "{moodle.url}"\ntoken = "{moodle.site.token}"\n'
    )
    sign_in(page, d.http.url)
    with page.expect_navigation():
        page.get_by_role("link", name="Send", exact=True).click()
    form = page.locator('form[action="/send/reengagement"]')
    form.get_by_label("Course id").fill(str(moodle.site.main_course_id))
    form.get_by_label("Inactive for at least (days)").fill("30")
    with page.expect_navigation():
        form.get_by_role("button", name="Preview the re-engagement").click()
    assert "/send/reengagement?" in page.url
    shown = int(page.locator("dd.to-send").inner_text())
    assert shown > 0 and Job.select().count() == 0
    assert page.locator("span.subject").inner_text()  # the rendered sample

    send = page.get_by_role("button", name=f"Send to {shown} recipients")
    send.scroll_into_view_if_needed()  # Chromium drops a click that scrolls past the frame
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    send.click()
    page.wait_for_timeout(300)
    assert questions and questions[0].startswith(f"Send to {shown} recipients?")
    assert Job.select().count() == 0  # dismissed: nothing sent

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        send.click()
    assert "/jobs/" in page.url
    job_id = page.url.rsplit("/", 1)[1]
    wait_for(lambda: len(server.accepted) == shown, what=f"the {shown} emails")
    mailed = sorted(m["To"].addresses[0].addr_spec for m in server.accepted)
    assert mailed == sorted(r.email for r in Recipient.select().where(Recipient.job == job_id))

    page.go_back()  # the preview again (not kept by the browser: asked anew)
    assert page.locator("dd.to-send").inner_text() == "0"
    assert f"{shown} under key" in page.locator("main").inner_text()
    assert page.get_by_role("button", name=f"Send to {shown} recipients").count() == 0
    assert Job.select().count() == 1 and len(server.accepted) == shown
