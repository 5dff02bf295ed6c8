"""`certificates revoke` as a real process, then the running daemon's public pages."""

import tomllib
import zipfile
from datetime import datetime
from io import BytesIO

import requests
from pypdf import PdfReader

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


def pdf_bytes() -> bytes:
    from io import BytesIO

    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=100)
    out = BytesIO()
    writer.write(out)
    return out.getvalue()


def make_course(tmp_path, n: int, course: int, *, sent=True, start: int = 1) -> dict[int, str]:
    """A job of `n` learners (userids start..) of `course`, each holding a certificate with
    its PDF in the configured certificate_dir; {userid: code}."""
    from sidecar import certificates, jobs
    from sidecar.db import migrations, store
    from sidecar.db.models import Recipient

    db = open_database(f"sqlite:///{tmp_path}/offload.db")
    database.initialize(db)
    migrations.upgrade(db)
    now = datetime(2026, 12, 5, 9, 30)
    try:
        people = [jobs.RecipientIn(i, f"l{i}@example.org", f"Fírst{i}", f"Last {i}/x")
                  for i in range(start, start + n)]  # fmt: skip
        spec = jobs.JobSpec(type="certificate", template_id="custom", source="test",
                            courseid=course, actions=jobs.Actions(certificate=True))  # fmt: skip
        job = jobs.create_job(spec, people, batch_size=500, now=now).job_id
        if sent:
            Recipient.update(status="sent").where(Recipient.job == job).execute()
            store.settle(job, now)
        issued = certificates.reserve_many(job, [p.userid for p in people], course, "local",
                                           f"{job}/", now)  # fmt: skip
        pdf = pdf_bytes()
        (tmp_path / "certificates" / job).mkdir(parents=True)
        for cert in issued.values():
            (tmp_path / "certificates" / cert.key).write_bytes(pdf)
        return {uid: cert.code for uid, cert in issued.items()}
    finally:
        db.close()


def test_a_course_of_2000_certificates_zips_every_one_once_named_by_learner_and_date(tmp_path):
    config = write_config(tmp_path)
    codes = make_course(tmp_path, 2000, course=7)
    make_course(tmp_path, 3, course=8, start=5000)  # another course: not in the ZIP
    out = tmp_path / "out" / "course-7.zip"
    out.parent.mkdir()
    done = cli(config, "certificates", "zip", "--course", "7", "-o", str(out))
    assert done.stdout.strip() == f"{out}: 2000 certificates of course 7"
    assert [p.name for p in out.parent.iterdir()] == ["course-7.zip"]  # no temp file left
    with zipfile.ZipFile(out) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert len(names) == len(set(names)) == 2000
        assert set(names) == {f"Last_{u}_x_Fírst{u}_2026-12-05_{c}.pdf" for u, c in codes.items()}
        assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        assert zf.testzip() is None
        reader = PdfReader(BytesIO(zf.read(f"Last_1234_x_Fírst1234_2026-12-05_{codes[1234]}.pdf")))
        assert len(reader.pages) == 1


def test_a_missing_pdf_is_listed_and_the_zip_made_without_it_revoked_and_unsent_left_out(
    tmp_path,
):
    config = write_config(tmp_path)
    codes = make_course(tmp_path, 4, course=7)
    unsent = make_course(tmp_path, 2, course=7, sent=False, start=10)
    lost = codes[2]
    (key,) = [p for p in (tmp_path / "certificates").rglob("2.pdf")]
    key.unlink()
    cli(config, "certificates", "revoke", codes[3], "--reason", "mistake", "--yes")
    out = tmp_path / "c.zip"
    made = cli(config, "certificates", "zip", "--course", "7", "-o", str(out), check=False)
    assert made.returncode == 1
    assert made.stdout.strip() == f"{out}: 2 certificates of course 7"
    assert "1 could not be read and are not in the ZIP (listed in its MISSING.txt)" in made.stderr
    assert f"  {lost} user 2: " in made.stderr and "No such file or directory" in made.stderr
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        assert sorted(n.split("_")[-1] for n in names if n != "MISSING.txt") == sorted(
            f"{codes[u]}.pdf" for u in (1, 4)
        )
        assert lost in zf.read("MISSING.txt").decode()
    assert not any(c in " ".join(names) for c in unsent.values())

    later = cli(config, "certificates", "zip", "--course", "7", "--since", "2026-12-06",
                "-o", str(out), check=False)  # fmt: skip
    assert later.returncode == 1
    assert "course 7 has no issued, valid certificate since 2026-12-06 00:00" in later.stderr
