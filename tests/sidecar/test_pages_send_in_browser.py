"""The send page in headless Chromium (tests/browser.py), as an administrator uses it:
a CSV chosen in the file picker, its preview, the confirmation dialog, then the job's page
while the daemon delivers to a real SMTP sink (aiosmtpd on 127.0.0.1)."""

from sidecar.db.models import Job

from .test_pages_jobs_in_browser import daemon, sign_in, sink, wait_for  # noqa: F401 (fixtures)

ROWS = "userid,email,firstname,lastname,room\n" + "".join(
    f"{i},learner{i}@example.org,First{i},Last{i},R{i}\n" for i in range(1, 6)
)


def test_a_csv_is_previewed_confirmed_and_delivered_from_the_page(
    daemon,  # noqa: F811
    sink,  # noqa: F811
    page,
    tmp_path,
    monkeypatch,
):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    server = sink()
    d = daemon(server.port)
    sign_in(page, d.http.url)
    with page.expect_navigation():
        page.get_by_role("link", name="Send", exact=True).click()
    (tmp_path / "rooms.csv").write_text(ROWS + "6,nobody,Six,Last6,R6\n", encoding="utf-8")
    page.get_by_label("CSV file").set_input_files(str(tmp_path / "rooms.csv"))
    page.get_by_label("Subject").fill("Your room")
    page.get_by_label("Message").fill("Hello {{ learner.firstname }}, your room is {{ room }}.")
    page.get_by_role("button", name="Preview the CSV send").click()
    page.wait_for_url("**/send/csv/*")
    assert "line 7" in page.locator("ul.problems").inner_text()
    assert page.get_by_role("button", name="Send to 5 recipients").count() == 0
    assert Job.select().count() == 0

    link = page.get_by_role("link", name="Upload another file")
    link.scroll_into_view_if_needed()  # Chromium drops a click that scrolls past the frame
    with page.expect_navigation():
        link.click()
    (tmp_path / "rooms.csv").write_text(ROWS, encoding="utf-8")
    page.get_by_label("CSV file").set_input_files(str(tmp_path / "rooms.csv"))
    page.get_by_label("Subject").fill("Your room")
    page.get_by_label("Message").fill("Hello {{ learner.firstname }}, your room is {{ room }}.")
    page.get_by_role("button", name="Preview the CSV send").click()
    page.wait_for_url("**/send/csv/*")
    assert "Hello First1, your room is R1." in page.locator("pre.sample-text").text_content()
    send = page.get_by_role("button", name="Send to 5 recipients")
    send.scroll_into_view_if_needed()  # Chromium drops a click that scrolls past the frame
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    send.click()
    page.wait_for_timeout(300)
    assert questions == ["Send to 5 recipients? The emails are queued at once and cannot be "
                         "called back."]  # fmt: skip
    assert Job.select().count() == 0  # dismissed: nothing sent

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        send.click()
    assert "/jobs/" in page.url
    wait_for(lambda: len(server.accepted) == 5, what="the five emails")
    assert sorted(m["To"] for m in server.accepted) == [
        f"learner{i}@example.org" for i in range(1, 6)
    ]
