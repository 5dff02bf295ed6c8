"""`certificates zip` of 5,000 PDFs: sidecar.certzip against bare `zipfile` on the same files.

Makes a ledger (SQLite) of one course with N delivered certificates and their PDFs
(incompressible, ~40 KB or ~100 KB each), then, each in a fresh process so the peak RSS
is its own: certzip (select from the ledger + write the ZIP, temp file and rename) and
bare zipfile (`ZipFile.write` of the same files, stored). Times are measured inside the
process, so interpreter start-up and imports are not counted; the CLI's wall time, start-up
included, is printed too. Targets: peak RSS <= 200 MB, certzip <= 1.2x bare zipfile.

Run: python bench/certificates_zip.py [--count 5000] [--size 40] [--size 100]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_ledger(work: Path, count: int, size_kb: int) -> None:
    from sidecar import certificates, jobs
    from sidecar.db import migrations
    from sidecar.db.connect import open_database
    from sidecar.db.models import Recipient, database

    db = open_database(f"sqlite:///{work}/ledger.db")
    database.initialize(db)
    migrations.upgrade(db)
    now = datetime(2026, 12, 5, 9, 0)
    people = [jobs.RecipientIn(i, f"l{i}@example.org", f"First{i}", f"Last{i}")
              for i in range(1, count + 1)]  # fmt: skip
    spec = jobs.JobSpec(type="certificate", template_id="custom", source="bench", courseid=7,
                        actions=jobs.Actions(certificate=True))  # fmt: skip
    job = jobs.create_job(spec, people, batch_size=500, now=now).job_id
    Recipient.update(status="sent").where(Recipient.job == job).execute()
    issued = certificates.reserve_many(job, range(1, count + 1), 7, "local", f"{job}/", now)
    (work / "certs" / job).mkdir(parents=True)
    for cert in issued.values():
        body = os.urandom(size_kb * 1024 - 20)  # PDFs are compressed: incompressible
        (work / "certs" / cert.key).write_bytes(b"%PDF-1.4\n" + body + b"\n%%EOF\n")
    db.close()


def run_certzip(work: Path) -> dict:
    from sidecar import certzip
    from sidecar.db.connect import open_database
    from sidecar.db.models import database

    db = open_database(f"sqlite:///{work}/ledger.db")
    database.initialize(db)
    t = time.perf_counter()
    entries = certzip.select(7)
    missing = certzip.write_file(entries, work / "certzip.zip",
                                 certzip.opener(work / "certs"))  # fmt: skip
    elapsed = time.perf_counter() - t
    assert not missing
    return {"seconds": elapsed, "entries": len(entries)}


def run_bare(work: Path) -> dict:
    files = sorted((work / "certs").rglob("*.pdf"))
    t = time.perf_counter()
    with zipfile.ZipFile(work / "bare.zip", "w", zipfile.ZIP_STORED) as zf:
        for path in files:
            zf.write(path, path.name)
    return {"seconds": time.perf_counter() - t, "entries": len(files)}


def child(variant: str, work: Path) -> None:
    result = {"certzip": run_certzip, "bare": run_bare}[variant](work)
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(variant: str, work: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--work", str(work)],
                         check=True, capture_output=True, text=True).stdout  # fmt: skip
    return json.loads(out.strip().splitlines()[-1])


def cli_wall(work: Path) -> float:
    config = work / "config.toml"
    config.write_text(f'[database]\nurl = "sqlite:///{work}/ledger.db"\n[providers.local]\n'
                      f'certificate_dir = "{work}/certs"\nmaildir = "{work}/mail"\n')  # fmt: skip
    env = {**os.environ, "MOODLE_OFFLOAD_CONFIG": str(config)}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sidecar", "certificates", "zip", "--course", "7",
                    "-o", str(work / "cli.zip")], check=True, env=env, cwd=ROOT,
                   capture_output=True)  # fmt: skip
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--size", type=int, action="append", help="PDF size in KB (repeatable)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    ap.add_argument("--child")
    ap.add_argument("--work")
    args = ap.parse_args()
    if args.child:
        child(args.child, Path(args.work))
        return
    for size in args.size or [40, 100]:
        with tempfile.TemporaryDirectory(prefix="certzip-bench-") as tmp:
            work = Path(tmp)
            make_ledger(work, args.count, size)
            runs = {v: [measure(v, work) for _ in range(args.repeat)] for v in ("bare", "certzip")}
            best = {v: min(r, key=lambda x: x["seconds"]) for v, r in runs.items()}
            rss = {v: max(x["rss_mb"] for x in r) for v, r in runs.items()}
            ratio = best["certzip"]["seconds"] / best["bare"]["seconds"]
            wall = cli_wall(work)
            print(f"{args.count} PDFs of ~{size} KB "
                  f"({(work / 'certzip.zip').stat().st_size / 1e6:.0f} MB ZIP):")  # fmt: skip
            print(f"  bare zipfile : {best['bare']['seconds']:.2f} s, "
                  f"peak RSS {rss['bare']:.0f} MB")  # fmt: skip
            print(f"  certzip      : {best['certzip']['seconds']:.2f} s, "
                  f"peak RSS {rss['certzip']:.0f} MB  (ledger query included)")  # fmt: skip
            print(f"  ratio {ratio:.2f}x (target <= 1.2x); RSS target <= 200 MB: "
                  f"{'ok' if rss['certzip'] <= 200 else 'OVER'}")  # fmt: skip
            print(f"  `moodle-offload certificates zip` wall time, start-up included: "
                  f"{wall:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
