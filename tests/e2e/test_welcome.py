"""`users import` and `send welcome` as real processes, against the Moodle sandbox over HTTP
and an SMTP sink: temporary passwords that log in and must then be changed, each user
welcomed once, and no password anywhere but in the one email that carries it."""

import re
import signal
import threading
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message

import pytest
import requests
from aiosmtpd.controller import Controller

from moodle_ws import errors, functions
from moodle_ws.client import ClientSettings, MoodleClient
from moodle_ws.sandbox import SandboxServer, SiteSpec, generate_site

from .conftest import cli, free_port, write_config
from .test_daemon import wait_until

KEY = "uJ0ZGmpcf1sv1Ktzi4Qev3Zdtzu5y2sXk0Gm3FA9oWY="
PASSWORD = re.compile(r"Temporary password: (\S+)")
USERNAME = re.compile(r"Username: (\S+)")


class Inbox:
    """Every message the sink accepted, whole."""

    def __init__(self):
        self.messages: list[Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"

    def texts(self) -> list[str]:
        with self.lock:
            return [_text(m) for m in self.messages]

    def credentials(self) -> dict[str, str | None]:
        """username -> the temporary password its email gave (None: none given)."""
        out: dict[str, str | None] = {}
        for text in self.texts():
            user = USERNAME.search(text).group(1)
            assert user not in out, f"{user} was welcomed twice"
            found = PASSWORD.search(text)
            out[user] = found.group(1) if found else None
        return out


def _text(msg: Message) -> str:
    part = next(p for p in msg.walk() if p.get_content_type() == "text/plain")
    return part.get_payload(decode=True).decode()


@pytest.fixture
def inbox():
    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


@pytest.fixture
def moodle():
    site = generate_site(SiteSpec(seed=11, learners=20, courses=1, companies=2))
    with SandboxServer(site) as server:
        server.site = site
        yield server


def welcome_config(tmp_path, moodle, inbox, extra: str = ""):
    path = write_config(tmp_path, smtp_port=inbox.port)
    text = path.read_text().replace("[security]", f'[security]\nencryption_key = "{KEY}"')
    text += f'[moodle]\nurl = "{moodle.url}"\ntoken = "{moodle.site.token}"\n' + extra
    path.write_text(text)
    return path


def import_file(path, n: int, start: int = 1, auth: str | None = None):
    head = "username,email,firstname,lastname" + (",auth" if auth else "")
    rows = [head] + [
        f"newuser{i},newuser{i}@example.org,New{i},Learner{i}" + (f",{auth}" if auth else "")
        for i in range(start, start + n)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def site_hour_ago(site) -> str:
    """An hour before the sandbox's own clock (its seeded time, not today's), as --since."""
    return datetime.fromtimestamp(site.now() - 3600, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def learner_client(moodle, token: str) -> MoodleClient:
    return MoodleClient(ClientSettings(url=moodle.url, token=token, attempts=1))


def test_500_imported_users_are_welcomed_once_with_a_password_that_must_be_changed(
    tmp_path, moodle, inbox
):
    site = moodle.site
    config = welcome_config(tmp_path, moodle, inbox)
    company = min(site.companies)
    before = set(site.users)
    site.reset_counts()
    out = cli(config, "users", "import", str(import_file(tmp_path / "u.csv", 500)),
              "--company", str(company), "--yes", "--deliver").stdout  # fmt: skip
    assert "500 accounts to create" in out and "created 500 accounts" in out
    assert "delivered: sent 500" in out
    created = set(site.users) - before
    assert len(created) == 500
    assert all(any(cu.companyid == company for cu in site.user_company_rows(u)) for u in created)
    # The passwords are set one request per batch of 200, and Moodle mailed nothing itself.
    assert site.requests_by_function["core_user_update_users"] == 3
    assert site.requests_by_function["core_user_create_users"] == 5
    assert not site.emails

    creds = inbox.credentials()
    assert len(creds) == 500 and all(creds.values())
    assert len(set(creds.values())) == 500
    login = learner_client(moodle, site.token)
    for username, password in creds.items():
        user = site.users[site.usernames[username]]
        assert user.preferences["auth_forcepasswordchange"] == "1"
        token = login.login(username, password, "moodle_mobile_app")["token"]
        if username in ("newuser1", "newuser500"):
            learner = learner_client(moodle, token)
            with pytest.raises(errors.MoodleAPIError, match="forcepasswordchangenotice"):
                functions.site_info(learner)
            learner.close()
    login.close()

    # Run again, and the other way: nobody is mailed twice.
    again = cli(config, "users", "import", str(tmp_path / "u.csv"), "--yes", "--deliver").stdout
    assert "0 accounts to create, 500 already in Moodle" in again
    assert "already welcomed (500)" in again and "nobody to welcome" in again
    since = cli(config, "send", "welcome", "--since", site_hour_ago(site), "--yes", "--deliver")
    assert "already welcomed (500)" in since.stdout
    assert len(inbox.messages) == 500


def test_send_welcome_since_previews_then_welcomes_sso_users_without_a_password(
    tmp_path, moodle, inbox
):
    site = moodle.site
    config = welcome_config(tmp_path, moodle, inbox)
    client = learner_client(moodle, site.token)
    made = functions.create_users(client, [
        {"username": "sso1", "firstname": "S", "lastname": "O", "email": "sso1@example.org",
         "auth": "oauth2"},
        {"username": "local1", "firstname": "L", "lastname": "O", "email": "local1@example.org",
         "password": "First-123x"},
        {"username": "gone1", "firstname": "G", "lastname": "O", "email": "gone1@example.org",
         "password": "First-123x"},
    ])  # fmt: skip
    client.close()
    site.users[made[2][0]].suspended = 1
    dry = cli(config, "send", "welcome", "--since", site_hour_ago(site), check=False)
    assert dry.returncode != 0 and "pass --yes" in dry.stderr  # not a terminal: refused
    assert "2 to welcome, 1 with a temporary password, 1 without" in dry.stdout
    assert "not welcomed: suspended account (1): " + str(made[2][0]) in dry.stdout
    assert "route: local: welcome emails carry temporary passwords" in dry.stdout
    assert "(temporary password: set when the email is sent)" in dry.stdout
    assert not inbox.messages

    out = cli(config, "send", "welcome", "--since", site_hour_ago(site), "--yes", "--deliver")
    assert "delivered: sent 2" in out.stdout
    creds = inbox.credentials()
    assert creds["sso1"] is None and creds["local1"]
    assert "no separate password is needed" in next(t for t in inbox.texts() if "sso1" in t)
    assert site.users[made[0][0]].password == ""  # the SSO account was not touched
    assert site.users[made[1][0]].password == creds["local1"]


def test_a_site_without_the_companion_function_is_told_what_to_add(tmp_path, moodle, inbox):
    moodle.site.remove_function("local_manireports_get_new_users")
    config = welcome_config(tmp_path, moodle, inbox)
    out = cli(config, "send", "welcome", "--since", "24h", "--yes", check=False)
    assert out.returncode == 1
    assert "local_manireports_get_new_users is not in the token's service" in out.stderr
    assert "--users" in out.stderr and "Traceback" not in out.stderr
    learner = moodle.site.learner_ids[0]
    dry = cli(config, "send", "welcome", "--users", f"{learner}", "--dry-run")
    assert "dry run: nothing sent; 1 to send" in dry.stdout and not inbox.messages
    named = cli(config, "send", "welcome", "--users", f"{learner},987654", "--yes", "--deliver")
    assert "not found in Moodle" in named.stdout and "987654" in named.stdout
    assert "delivered: sent 1" in named.stdout
    listed = tmp_path / "ids.csv"
    listed.write_text(f"userid,note\n{learner},x\nabc,y\n")
    bad = cli(config, "send", "welcome", "--csv", str(listed), "--yes", check=False)
    assert bad.returncode == 1 and "line 3: userid 'abc' is not a user id" in bad.stderr
    dry = cli(config, "users", "import", str(import_file(tmp_path / "u.csv", 2)), "--dry-run")
    assert "dry run: no account created, nothing sent; 2 to create" in dry.stdout
    assert "newuser1" not in moodle.site.usernames
    moodle.site.remove_function("core_user_update_users")
    out = cli(config, "users", "import", str(import_file(tmp_path / "u.csv", 2)), "--yes",
              check=False)  # fmt: skip
    assert out.returncode == 1 and "core_user_update_users is not in the token's service" in (
        out.stderr
    )
    assert "newuser1" not in moodle.site.usernames


def test_a_malformed_import_file_names_each_bad_line_and_creates_nothing(tmp_path, moodle, inbox):
    config = welcome_config(tmp_path, moodle, inbox)
    path = tmp_path / "bad.csv"
    path.write_text(
        "username,email,firstname,lastname\n"
        "good1,good1@example.org,G,One\n"
        "Bad2,bad2@example.org,B,Two\n"
        "good3,not-an-address,G,Three\n"
        "good1,other@example.org,G,Again\n"
        "good5,good5@example.org,,Five\n"
    )
    before = len(moodle.site.users)
    out = cli(config, "users", "import", str(path), "--yes", check=False)
    assert out.returncode == 1 and "4 bad rows, no account created" in out.stderr
    for line in (
        "line 3: username Bad2 must be lower case",
        "line 4: email 'not-an-address'",
        "line 5: username good1 is already on line 2",
        "line 6: firstname is empty",
    ):
        assert line in out.stderr  # fmt: skip
    assert len(moodle.site.users) == before and not inbox.messages


class RefusingInbox(Inbox):
    """Refuses the first message to each address in `refuse` (550: a permanent failure)."""

    def __init__(self, refuse: set[str]):
        super().__init__()
        self.refuse = set(refuse)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            self.refuse.discard(address)
            return "550 5.1.1 mailbox unavailable (once)"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def sign_in(url: str, name: str, password: str) -> requests.Session:
    http = requests.Session()
    form = http.get(f"{url}/login", timeout=30).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
    done = http.post(f"{url}/login", data={"csrf": csrf, "username": name,
                                            "password": password}, timeout=30)  # fmt: skip
    assert done.status_code in (200, 303) and "Sign in" not in done.text[:2000], done.text[:500]
    return http


def test_a_failed_send_gets_a_new_password_and_no_password_is_kept_anywhere(
    tmp_path, moodle, start_daemon
):
    site = moodle.site
    refusing = RefusingInbox({"fail1@example.org"})
    controller = Controller(refusing, hostname="127.0.0.1", port=free_port())
    controller.start()
    refusing.port = controller.port
    try:
        _failed_send_then_search(tmp_path, moodle, site, refusing, start_daemon)
    finally:
        controller.stop()


def _failed_send_then_search(tmp_path, moodle, site, inbox, start_daemon):
    config = welcome_config(tmp_path, moodle, inbox, "[dashboard]\nenabled = true\n")
    client = learner_client(moodle, site.token)
    made = functions.create_users(client, [
        {"username": name, "firstname": name.title(), "lastname": "Search",
         "email": f"{name}@example.org", "password": "First-123x"}
        for name in ("fine1", "fine2", "fail1")
    ])  # fmt: skip
    client.close()
    fail_id = made[2][0]
    outputs: list[str] = []

    def run(*args, **kw):
        proc = cli(config, "-v", *args, **kw)
        outputs.extend([proc.stdout, proc.stderr])
        return proc

    ids = ",".join(str(uid) for uid, _ in made)
    first = run("send", "welcome", "--users", ids, "--yes", "--deliver")
    assert "failed 1" in first.stdout and "sent 2" in first.stdout
    job_id = re.search(r"job ([0-9a-f-]{36})", first.stdout).group(1)
    never_mailed = site.users[fail_id].password  # set in Moodle, its email refused
    assert never_mailed != "First-123x"
    assert "1 recipients re-queued" in run("jobs", "retry", job_id).stdout

    pw_file = tmp_path / "admin-pw"
    pw_file.write_text("a long dashboard passphrase\n")
    run("admin", "add", "alice", "--password-file", str(pw_file))
    api_token = run("token", "create", "searcher").stdout.strip().splitlines()[-1]
    daemon = start_daemon(config)
    url = "http://" + re.search(r'listen = "([^"]+)"', config.read_text()).group(1)
    wait_until(lambda: "completed" in run("jobs", "show", job_id).stdout.split("\n")[0])

    creds = inbox.credentials()
    assert sorted(creds) == ["fail1", "fine1", "fine2"]
    assert creds["fail1"] != never_mailed  # the retry set a new password...
    assert site.users[fail_id].password == creds["fail1"]  # ...which is the one that works
    passwords = [never_mailed, *creds.values()]

    # Everything an admin or a program can see, and the database itself.
    run("jobs", "show", job_id)
    run("jobs", "export", job_id)
    run("jobs", "list")
    run("send", "welcome", "--users", ids, "--yes")  # a second preview: all already welcomed
    api = requests.Session()
    api.headers["Authorization"] = f"Bearer {api_token}"
    for path in (
        "/jobs",
        f"/jobs/{job_id}",
        f"/jobs/{job_id}/recipients",
        f"/jobs/{job_id}/export",
    ):
        answer = api.get(f"{url}/api/v1{path}", timeout=30)
        assert answer.status_code == 200, path
        outputs.append(answer.text)
    pages = sign_in(url, "alice", "a long dashboard passphrase")
    for path in (
        "/",
        "/jobs",
        f"/jobs/{job_id}",
        f"/jobs/{job_id}/progress",
        f"/jobs/{job_id}/export.csv",
    ):
        answer = pages.get(url + path, timeout=30)
        assert answer.status_code == 200, path
        outputs.append(answer.text)
    job_page = outputs[-3]
    assert "welcome_password_renewed" in job_page or "new temporary password" in job_page
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=60) == 0
    outputs.append(daemon.log_path.read_text())
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("offload.db*"))

    for password in passwords:
        assert not any(password in text for text in outputs), "a password leaked to output"
        assert password.encode() not in stored, "a password is in the database"
    assert "welcome_password_renewed" in stored.decode("utf-8", "replace")
