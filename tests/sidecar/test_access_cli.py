"""`admin add | remove | list` and `token create | list | revoke` through the real CLI:
what an administrator types and reads, and what the database keeps (never a secret)."""

import re

import pytest
from click.testing import CliRunner

from sidecar import access, passwords
from sidecar.cli import main
from sidecar.db.connect import open_database
from sidecar.db.models import AdminAccount, ApiToken, AuditLog

GOOD = "correct horse battery"


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(f'[database]\nurl = "sqlite:///{tmp_path}/offload.db"\n')
    return path


@pytest.fixture
def run(config):
    def invoke(*args, input=None):
        return CliRunner().invoke(main, ["-c", str(config), *args], input=input)

    return invoke


@pytest.fixture
def ledger(tmp_path):
    def open_it():
        return open_database(f"sqlite:///{tmp_path}/offload.db")

    return open_it


def test_admin_add_prompts_twice_and_stores_only_a_scrypt_hash(run, ledger):
    result = run("admin", "add", "alice", input=f"{GOOD}\n{GOOD}\n")
    assert result.exit_code == 0, result.output
    assert "account alice: added" in result.output
    assert result.output.count("Password") == 1 and "Repeat it" in result.output
    ledger()
    row = AdminAccount.get(AdminAccount.name == "alice")
    assert row.password_hash.startswith("scrypt$32768$8$1$") and GOOD not in row.password_hash
    assert access.verify_account("alice", GOOD)
    assert not access.verify_account("alice", GOOD + "!")
    assert [a.event for a in AuditLog.select()] == ["admin_added"]
    assert GOOD not in AuditLog.get().detail


def test_admin_add_with_mismatched_repeat_asks_again(run):
    result = run("admin", "add", "alice", input=f"{GOOD}\nsomething else!!\n{GOOD}\n{GOOD}\n")
    assert result.exit_code == 0, result.output
    assert "do not match" in result.output


def test_short_password_is_refused_with_the_minimum(run, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("short-pw\n")
    result = run("admin", "add", "bob", "--password-file", str(secret))
    assert result.exit_code == 1
    assert "the password is 8 characters; use at least 12" in result.output
    assert "bob" not in run("admin", "list").output


def test_password_file_adds_and_list_and_remove_follow(run, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(f"{GOOD}\n")
    assert run("admin", "add", "ops", "--password-file", str(secret)).exit_code == 0
    dup = run("admin", "add", "ops", "--password-file", str(secret))
    assert dup.exit_code == 1 and "account ops exists" in dup.output
    listed = run("admin", "list").output
    assert "local accounts: 1" in listed and re.search(r"^  ops\s+added ", listed, re.M)
    assert run("admin", "remove", "ops").exit_code == 0
    assert "local accounts: 0" in run("admin", "list").output
    gone = run("admin", "remove", "ops")
    assert gone.exit_code == 1 and "no local account ops" in gone.output


def test_bad_account_name_is_refused_before_the_prompt(run):
    result = run("admin", "add", "bad name")
    assert result.exit_code == 1 and "cannot name an account" in result.output
    assert "Password" not in result.output


def test_token_create_prints_it_once_and_stores_only_its_hash(run, ledger):
    result = run("token", "create", "monitor", "--company", "7", "--read-only")
    assert result.exit_code == 0, result.output
    value = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"mo_[A-Za-z0-9_-]{43}", value)
    ledger()
    row = ApiToken.get(ApiToken.name == "monitor")
    assert value not in row.token_hash and row.company_id == 7 and row.read_only
    listed = run("token", "list").output
    assert "monitor" in listed and "company 7" in listed and "read-only" in listed
    assert value not in listed
    assert all(value not in a.detail for a in AuditLog.select())
    principal = access.token_principal(value, row.created_at)
    assert principal.companies == (7,) and principal.read_only and not principal.is_admin


def test_token_revoke_refuses_the_token_from_then_on(run, ledger):
    value = run("token", "create", "plugin").stdout.strip().splitlines()[-1]
    ledger()
    assert access.token_principal(value, _now()).is_admin
    assert run("token", "revoke", "plugin").exit_code == 0
    assert access.token_principal(value, _now()) is None
    again = run("token", "revoke", "plugin")
    assert again.exit_code == 1 and "no API token plugin" in again.output


def _now():
    from sidecar.runtime import utcnow

    return utcnow()


def test_verify_password_refuses_a_malformed_hash():
    assert not passwords.verify_password(GOOD, "md5$abc")
    assert not passwords.verify_password(GOOD, "")
    digest = passwords.hash_password(GOOD)
    assert digest != passwords.hash_password(GOOD)  # a fresh salt each time
    assert passwords.verify_password(GOOD, digest)
