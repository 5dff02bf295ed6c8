"""`certificates revoke` as a real process, then the running daemon's public pages."""

import tomllib

import requests

from sidecar.db.connect import open_database
from sidecar.db.models import AuditLog, Certificate, database

from .conftest import cli, message_args, write_config, write_csv


def issued_codes(tmp_path) -> list[str]:
    db = open_database(f"sqlite:///{tmp_path}/offload.db")
    database.initialize(db)
    try:
        return [c.code for c in Certificate.select().order_by(Certificate.userid)]
    finally:
        db.close()


def audit_details(tmp_path, event: str) -> list[str]:
    db = open_database(f"sqlite:///{tmp_path}/offload.db")
    database.initialize(db)
    try:
        return [a.detail for a in AuditLog.select().where(AuditLog.event == event)]
    finally:
        db.close()


def test_revoke_from_the_cli_then_verify_says_why_and_the_link_is_gone(tmp_path, start_daemon):
    config = write_config(tmp_path)
    learners = write_csv(tmp_path / "l.csv", 2)
    cli(config, "send", "csv", str(learners), *message_args(tmp_path), "--certificate",
        "--yes", "--deliver")  # fmt: skip
    first, second = issued_codes(tmp_path)

    refused = cli(config, "certificates", "revoke", first, "--reason", "typo", check=False)
    assert refused.returncode == 1 and "pass --yes" in refused.stderr
    unknown = cli(config, "certificates", "revoke", "NOSUCHCODE", "--reason", "x", "--yes",
                  check=False)  # fmt: skip
    assert unknown.returncode == 1
    assert "Error: no certificate has the code 'NOSUCHCODE'" in unknown.stderr
    empty = cli(config, "certificates", "revoke", first, "--reason", "  ", "--yes", check=False)
    assert empty.returncode == 1 and "the reason is required" in empty.stderr

    done = cli(config, "certificates", "revoke", first.lower(), "--reason", "name  misspelt",
               "--yes")  # fmt: skip
    assert done.stdout.startswith(f"certificate {first} revoked (")
    assert done.stdout.rstrip().endswith("): name misspelt")
    again = cli(config, "certificates", "revoke", first, "--reason", "other", "--yes")
    assert f"certificate {first} was already revoked on " in again.stdout
    assert ": name misspelt (nothing changed)" in again.stdout
    [detail] = audit_details(tmp_path, "certificate_revoked")
    assert '"via": "cli"' in detail and '"reason": "name misspelt"' in detail
    assert '"name": ' in detail and '"source": "os"' in detail

    start_daemon(config)
    base = "http://" + tomllib.loads(config.read_text())["server"]["listen"]
    verify = requests.get(f"{base}/verify/{first}", timeout=10)
    assert verify.status_code == 200 and f"{first}: <span" in verify.text
    assert "revoked</span>" in verify.text and ": name misspelt.</p>" in verify.text
    gone = requests.get(f"{base}/certificates/{first}", timeout=10)
    assert gone.status_code == 410 and "text/html" in gone.headers["Content-Type"]
    assert f"Certificate {first} was revoked on " in gone.text
    valid = requests.get(f"{base}/certificates/{second}", timeout=10)
    assert valid.status_code == 200 and valid.content.startswith(b"%PDF")
    assert requests.get(f"{base}/certificates/NOSUCHCODE", timeout=10).status_code == 404
