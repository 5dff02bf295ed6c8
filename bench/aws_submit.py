"""Submit one 50,000-recipient email job to SQS, against bare boto3 SendMessageBatch calls.

moto runs in server mode as a separate process on 127.0.0.1. Measured: the wall time of
`Runtime(config).aws.submitter.run_once()` until every batch of the job is queued. That
includes rendering each recipient's email (sandboxed Jinja2), building and gzip-compressing
the `offload.batch.v1` messages, the SendMessageBatch calls and the ledger commit after each
request (SQLite). The bodies actually sent are captured from the client's request events.
The worker processes that compose large batches (sidecar/composepool.py) are started
before the timing, as a running daemon has them.
Floor: the same bodies sent to a second, fresh queue with bare boto3 `send_message_batch`,
one call per captured request (same entries, same grouping), timed.
Target: ours <= 1.5x the floor. Also printed: messages/s, bytes per message against the
queue's size limit (how well batches are packed) and peak RSS.
Render floor: the same 50,000 emails rendered by bare Jinja2 (no sandbox, one context per
email, the three blocks, nothing else), which is the least any submission that renders
in the sidecar (docs/job-message.md) must spend on top of the SQS calls; printed with the
ratio of ours to both floors together.
Run: python bench/aws_submit.py [--recipients N] [--batch-size N]
"""

import argparse
import cProfile
import os
import pstats
import resource
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import boto3
import jinja2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sidecar import jobs  # noqa: E402
from sidecar.config import Config  # noqa: E402
from sidecar.db.models import Batch  # noqa: E402
from sidecar.render import SHIPPED, learner_vars  # noqa: E402
from sidecar.runtime import Runtime  # noqa: E402
from sidecar.status import BatchStatus  # noqa: E402
from tests.motoserver import AWS_ENV, AWS_UNSET, moto_process  # noqa: E402

REGION = "eu-west-1"
SENDER = "noreply@academy.example.org"
QUEUE_LIMIT = 262_144
FIRST = ["Łukasz", "Дмитрий", "Ελένη", "Siobhán", "José", "Zoë", "Ayşe", "Nguyễn Thị",
         "Søren", "François", "Małgorzata", "Jürgen", "Aoife", "Chloé", "Oluwaseun", "Priya",
         "Björn", "Ines", "Kateřina", "Mónica", "Wei", "Yūki", "Ольга", "Αλέξανδρος"]  # fmt: skip
LAST = ["Wiśniewski", "Иванов", "Παπαδοπούλου", "Ní Bhriain", "García Márquez", "Dubois",
        "Yılmaz", "Hương", "Kierkegaard", "Lefèvre", "Kowalczyk", "Müller", "O'Sullivan",
        "Adébáyọ̀", "Raghunathan", "Åström", "Fernández", "Dvořáková", "Núñez", "Zhang",
        "Tanaka", "Смирнова", "Γεωργίου", "van der Berg"]  # fmt: skip


COURSE_URL = "https://moodle.example.org/course/view.php?id=101"
TEMPLATE_DATA = {
    "course": {"fullname": "Sécurité au travail 101", "shortname": "SEC101", "url": COURSE_URL}
}


def people(n: int) -> list[jobs.RecipientIn]:
    return [
        jobs.RecipientIn(u, f"learner{u}@school{u % 97}.example.org", FIRST[u % len(FIRST)],
                         LAST[(u * 7) % len(LAST)], {"department": "Operations"})
        for u in range(1, n + 1)
    ]  # fmt: skip


def make_config(db_url: str, endpoint: str, queue_url: str, tmp: Path, batch_size: int) -> Config:
    return Config.model_validate({
        "database": {"url": db_url},
        "server": {"public_url": "https://sidecar.example.org"},
        "security": {"callback_secrets": ["bench-secret"]},
        "offload": {"enabled": True, "provider": "aws", "job_batch_size": batch_size},
        "providers": {"aws": {"region": REGION, "sqs_queue_url": queue_url,
                              "s3_bucket": "bench-certificates", "ses_from": SENDER,
                              "endpoint_url": endpoint, "results_wait_seconds": 0},
                      "local": {"certificate_dir": str(tmp / "certs"),
                                "maildir": str(tmp / "mail")}},
    })  # fmt: skip


def create(n: int, batch_size: int, route: str = "aws", now=None) -> jobs.Created:
    """One reminder job of `n` recipients on the cloud route `route` (the other cloud
    benches make theirs here too)."""
    spec = jobs.JobSpec(
        type="send_reminder",
        template_id="reminder",
        source="bench",
        route=route,
        route_reason="bench: forced cloud",
        courseid=101,
        template_data=TEMPLATE_DATA,
    )
    now = now or datetime.now(UTC).replace(tzinfo=None)
    return jobs.create_job(spec, people(n), batch_size=batch_size, now=now)


def submit_all(submitter, job_id: str, profile: bool):
    """(batches queued, seconds, the cProfile.Profile or None): `run_once` until the job
    has nothing left to hand over, timed (and profiled when asked)."""
    started = time.perf_counter()
    if pool := submitter._pool():  # a running daemon keeps its composing workers
        pool.start()
    print(f"composing workers:     {submitter.workers} (started in "
          f"{time.perf_counter() - started:.2f} s, before the timing: once a daemon)")  # fmt: skip
    profiler = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if profiler:
        profiler.enable()
    queued = 0
    while n := submitter.run_once(job_id):
        queued += n
    seconds = time.perf_counter() - t
    if profiler:
        profiler.disable()
    return queued, seconds, profiler


def render_floor(template_data: dict, n: int) -> float:
    """Seconds bare Jinja2 takes to render the reminder's three blocks for n learners."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(SHIPPED)), autoescape=True,
                             auto_reload=False)  # fmt: skip
    template = env.get_template("reminder.html")
    blocks = [template.blocks[b] for b in ("subject", "html", "text")]
    base = dict(template.globals)
    started = time.perf_counter()
    for p in people(n):
        learner = learner_vars(p.userid, p.email, p.firstname, p.lastname)
        ctx = template.new_context({**base, **template_data, **p.vars, **learner}, shared=True)
        for block in blocks:
            "".join(block(ctx))
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipients", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--profile", action="store_true",
                    help="run our side under cProfile and print where its time goes")  # fmt: skip
    args = ap.parse_args()
    os.environ.update(AWS_ENV)
    for name in AWS_UNSET:
        os.environ.pop(name, None)
    with (
        tempfile.TemporaryDirectory(prefix="bench-aws-submit-") as tmpdir,
        moto_process() as endpoint,
    ):
        tmp = Path(tmpdir)
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)
        attrs = {"MaximumMessageSize": str(QUEUE_LIMIT)}
        tag = uuid.uuid4().hex[:8]
        ours_url = sqs.create_queue(QueueName=f"jobs-{tag}", Attributes=attrs)["QueueUrl"]
        floor_url = sqs.create_queue(QueueName=f"floor-{tag}", Attributes=attrs)["QueueUrl"]

        config = make_config(f"sqlite:///{tmp}/ledger.db", endpoint, ours_url, tmp,
                             args.batch_size)  # fmt: skip
        rt = Runtime(config)
        rt.ready_db()
        created = create(args.recipients, args.batch_size)

        requests: list[list[dict]] = []

        def record(params, **_):
            requests.append([dict(e) for e in params["Entries"]])

        aws = rt.aws  # clients built here, untimed; the first request is inside the timing
        aws.sqs.client.meta.events.register("provide-client-params.sqs.SendMessageBatch", record)
        queued, ours, profiler = submit_all(aws.submitter, created.job_id, args.profile)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        left = Batch.select().where(Batch.job == created.job_id,
                                    Batch.status == BatchStatus.PENDING).count()  # fmt: skip
        rt.close()

        floor_client = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)
        t = time.perf_counter()
        for entries in requests:
            resp = floor_client.send_message_batch(QueueUrl=floor_url, Entries=entries)
            assert not resp.get("Failed"), resp["Failed"]
        floor = time.perf_counter() - t
        floor_client.close()
        depth = sqs.get_queue_attributes(
            QueueUrl=ours_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
        sqs.close()

    rendering = render_floor(TEMPLATE_DATA, args.recipients)
    sizes = [len(e["MessageBody"].encode()) for r in requests for e in r]
    messages, total = len(sizes), sum(sizes)
    print(f"recipients:            {created.pending} in {created.batches} batches "
          f"({queued} queued, {left} left pending)")  # fmt: skip
    print(f"messages:              {messages} ({depth} in the queue)")
    print(f"bytes:                 {total:,} ({total / created.pending:.0f} per recipient)")
    print(f"API calls:             {len(requests)} SendMessageBatch "
          f"({messages / len(requests):.1f} messages a call)")  # fmt: skip
    print(f"ours (run_once):       {ours:.2f} s  render + build + gzip + SQS + ledger commits")
    print(f"floor (bare boto3):    {floor:.2f} s  same bodies, same grouping")
    print(f"ratio ours/floor:      {ours / floor:.2f}  (target <= 1.5)")
    print(f"render floor:          {rendering:.2f} s  bare Jinja2, the same emails, no sandbox")
    print(f"ratio ours/(floor + render floor): {ours / (floor + rendering):.2f}")
    print(f"throughput:            {messages / ours:.0f} messages/s, "
          f"{created.pending / ours:.0f} recipients/s "
          f"(floor {messages / floor:.0f} messages/s)")  # fmt: skip
    fill = total / messages / QUEUE_LIMIT
    print(f"bytes per message:     mean {total / messages:,.0f}, max {max(sizes):,} "
          f"of the queue's {QUEUE_LIMIT:,} limit ({fill:.0%} full)")  # fmt: skip
    print(f"peak RSS:              {rss:.0f} MB")
    if profiler:
        print("\nprofile of ours (times inflated by cProfile; read the shares):")
        stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs()
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
