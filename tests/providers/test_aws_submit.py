"""SQS submission against moto in server mode: packing, FIFO ids, retries, check()."""

import json
import uuid

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from providers.aws import AwsSettings, MessageOverLimit, SqsSubmitter, SubmitInterrupted
from providers.aws.connector import MAX_ENTRIES, entry_id, pack
from providers.base import ProviderError, ProviderUnavailable
from providers.message import build_batch_messages, decode_body

REGION = "eu-west-1"


def header(batch_id):
    return {
        "job_id": str(uuid.uuid4()), "batch_id": batch_id, "batch_index": 0,
        "batch_count": 1, "tenant_id": 1, "type": "send_reminder", "courseid": 101,
        "created_by": 2, "actions": {"email": True, "certificate": False},
        "email": {"from": "noreply@example.org", "reply_to": None, "subject": "Reminder",
                  "template_id": "reminder_v1"},
        "template_data": {"course_name": "Sécurité"},
        "callback": {"url": "https://sidecar.example.org/callback", "mode": "http"},
        "timestamp": "2025-11-18T12:00:00Z",
    }  # fmt: skip


def people(count, text="hello"):
    return [
        {"userid": 1000 + i, "email": f"u{i}@example.com", "firstname": "Łukasz",
         "lastname": "Żółć", "subject": "Hi", "html": f"<p>{text}</p>", "text": text,
         "certificate_html": None, "vars": {}}
        for i in range(count)
    ]  # fmt: skip


def batches(count, *, recipients=1, max_bytes=262_144, text="hello"):
    """batch_id → bodies, as the sidecar hands them over."""
    out = {}
    for _ in range(count):
        batch_id = str(uuid.uuid4())
        out[batch_id] = build_batch_messages(
            header(batch_id), people(recipients, text), max_bytes=max_bytes, compress=False
        )
    return out


@pytest.fixture
def sqs(moto):
    client = boto3.client("sqs", region_name=REGION, endpoint_url=moto)
    yield client
    client.close()


@pytest.fixture
def make_queue(sqs):
    def make(*, fifo=False, **attributes):
        name = f"jobs-{uuid.uuid4().hex[:12]}" + (".fifo" if fifo else "")
        attrs = {k: str(v) for k, v in attributes.items()}
        if fifo:
            attrs["FifoQueue"] = "true"
        return sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]

    return make


@pytest.fixture
def make_submitter(moto):
    made = []

    def make(url, **over):
        settings = AwsSettings(region=REGION, sqs_queue_url=url, endpoint_url=moto, **over)
        sleeps = []
        submitter = SqsSubmitter(settings, sleep=sleeps.append)
        submitter.sleeps = sleeps
        submitter.calls = []  # the Entries of every SendMessageBatch call
        submitter.client.meta.events.register(
            "provide-client-params.sqs.SendMessageBatch",
            lambda params, **_: submitter.calls.append(params["Entries"]),
        )
        made.append(submitter)
        return submitter

    yield make
    for s in made:
        s.close()


def receive_all(sqs, url, expected):
    got = []
    for _ in range(50):
        resp = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            MessageSystemAttributeNames=["All"],
            WaitTimeSeconds=0,
        )
        got += resp.get("Messages", [])
        if len(got) >= expected:
            break
    return got


def test_25_messages_go_in_3_calls_and_all_arrive_with_their_bodies(
    make_queue, make_submitter, sqs
):
    url = make_queue()
    submitter = make_submitter(url)
    sent = batches(25)

    outcomes = submitter.submit(sent)

    assert [len(c) for c in submitter.calls] == [10, 10, 5]
    assert set(outcomes) == set(sent)
    assert all(o.queued and o.error is None for o in outcomes.values())
    received = receive_all(sqs, url, 25)
    assert len(received) == 25
    assert sorted(m["Body"].encode() for m in received) == sorted(
        b for bodies in sent.values() for b in bodies
    )
    by_batch = {decode_body(m["Body"].encode())["batch_id"]: m["MessageId"] for m in received}
    assert {b: o.message_ids for b, o in outcomes.items()} == {
        b: (mid,) for b, mid in by_batch.items()
    }
    assert "MessageGroupId" not in submitter.calls[0][0]
    assert "MessageDeduplicationId" not in submitter.calls[0][0]


def test_small_queue_limit_packs_entries_so_no_call_exceeds_it(make_queue, make_submitter, sqs):
    url = make_queue(MaximumMessageSize=1024)
    submitter = make_submitter(url)
    limit = submitter.max_message_bytes()
    sent = {}
    for i in range(12):  # small headers and bodies of many sizes, some split in parts
        batch_id = str(uuid.uuid4())
        recipients = [{"userid": u, "text": "word " * (20 + 5 * i)} for u in range(1 + i % 4)]
        sent[batch_id] = build_batch_messages(
            {"batch_id": batch_id}, recipients, max_bytes=limit, compress=False
        )
    bodies = [b for parts in sent.values() for b in parts]
    assert limit == 1024 and len(bodies) > len(sent)  # split by build_batch_messages

    outcomes = submitter.submit(sent)

    assert all(o.queued and len(o.message_ids) == len(sent[b]) for b, o in outcomes.items())
    sizes = [sum(len(e["MessageBody"].encode()) for e in call) for call in submitter.calls]
    assert max(sizes) <= 1024
    assert all(len(call) <= MAX_ENTRIES for call in submitter.calls)
    assert len(submitter.calls) < len(bodies)  # packed, not one call per message
    assert len(receive_all(sqs, url, len(bodies))) == len(bodies)


def test_fifo_queue_gets_deterministic_dedup_and_group_ids(make_queue, make_submitter, sqs):
    url = make_queue(fifo=True)
    submitter = make_submitter(url)
    sent = batches(3)

    submitter.submit(sent)
    submitter.submit(sent)  # a resend after a crash: deduplicated by the queue

    entries = submitter.calls[0]
    assert [e["MessageGroupId"] for e in entries] == list(sent)
    assert [e["MessageDeduplicationId"] for e in entries] == [entry_id(b, 0) for b in sent]
    assert submitter.calls[1] == entries
    received = receive_all(sqs, url, 6)
    assert sorted(m["Attributes"]["MessageGroupId"] for m in received) == sorted(sent)
    assert len(received) == 3


def test_check_reports_the_size_limit_and_the_dead_letter_queue(make_queue, make_submitter, sqs):
    dlq = make_queue()
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5})
    url = make_queue(MaximumMessageSize=65536, RedrivePolicy=redrive)

    info = make_submitter(url).check()

    assert (info.url, info.max_message_bytes, info.fifo) == (url, 65536, False)
    assert (info.dlq_arn, info.max_receive_count) == (dlq_arn, 5)
    assert "65536 bytes" in info.describe() and dlq_arn in info.describe()
    bare = make_submitter(make_queue()).check()
    assert bare.dlq_arn is None and "no redrive policy" in bare.describe()


def test_unknown_queue_url_gives_provider_unavailable_naming_it(moto, make_submitter):
    url = f"{moto}/123456789012/missing-{uuid.uuid4().hex[:8]}"
    submitter = make_submitter(url)

    with pytest.raises(ProviderUnavailable, match=url):
        submitter.check()
    with pytest.raises(ProviderUnavailable, match=url):
        submitter.submit(batches(1))
    assert submitter.calls == []


def test_message_over_the_limit_raises_before_any_call(make_queue, make_submitter):
    url = make_queue(MaximumMessageSize=1024)
    submitter = make_submitter(url)
    sent = batches(2)
    big_id = str(uuid.uuid4())
    sent[big_id] = build_batch_messages(
        header(big_id), people(1, "x" * 800), max_bytes=4096, compress=False
    )

    with pytest.raises(MessageOverLimit, match=f"batch {big_id}: message part 0 is"):
        submitter.submit(sent)
    assert submitter.calls == []
    assert issubclass(MessageOverLimit, ProviderError)


def fail_first_entry(submitter, *, sender_fault, times=1):
    """Make SQS report the first entry of the next `times` calls as Failed."""
    left = [times]

    def hook(parsed, **_):
        if left[0] > 0 and parsed.get("Successful"):
            left[0] -= 1
            ok = parsed["Successful"].pop(0)
            parsed.setdefault("Failed", []).append(
                {"Id": ok["Id"], "SenderFault": sender_fault, "Code": "InternalError",
                 "Message": "try again"}
            )  # fmt: skip

    submitter.client.meta.events.register("after-call.sqs.SendMessageBatch", hook)


def test_server_side_entry_failure_is_resent_alone_with_backoff(make_queue, make_submitter):
    submitter = make_submitter(make_queue())
    sent = batches(4)
    fail_first_entry(submitter, sender_fault=False, times=2)

    outcomes = submitter.submit(sent)

    assert all(o.queued for o in outcomes.values())
    first = next(iter(sent))
    assert [len(c) for c in submitter.calls] == [4, 1, 1]
    assert submitter.calls[1][0]["Id"] == submitter.calls[2][0]["Id"] == entry_id(first, 0)
    assert len(submitter.sleeps) == 2 and 0 < submitter.sleeps[0] <= submitter.sleeps[1]


def test_entry_failures_are_reported_never_dropped(make_queue, make_submitter):
    submitter = make_submitter(make_queue(), entry_attempts=2)
    sent = batches(3)
    first, second = list(sent)[:2]
    fail_first_entry(submitter, sender_fault=True)

    outcomes = submitter.submit(sent)

    assert not outcomes[first].queued and outcomes[first].message_ids == (None,)
    assert "InternalError" in outcomes[first].error
    assert [len(c) for c in submitter.calls] == [3]  # a sender fault is not resent
    assert outcomes[second].queued

    fail_first_entry(submitter, sender_fault=False, times=5)
    again = submitter.submit({first: sent[first]})
    assert "after 2 attempts" in again[first].error
    assert [len(c) for c in submitter.calls] == [3, 1, 1]


@pytest.mark.parametrize(
    ("sizes", "limit", "expected"),
    [
        ([1] * 25, 100, [(0, 10), (10, 20), (20, 25)]),
        ([400, 400, 400, 100], 1024, [(0, 2), (2, 4)]),
        ([1024, 1, 1024], 1024, [(0, 1), (1, 2), (2, 3)]),
        ([], 1024, []),
    ],
    ids=["ten-entries", "bytes", "full-bodies", "empty"],
)
def test_pack_respects_entry_and_byte_limits(sizes, limit, expected):
    assert pack(sizes, limit) == expected


def test_outage_mid_submission_raises_transient_with_what_was_accepted(make_queue, make_submitter):
    url = make_queue()
    submitter = make_submitter(url, max_attempts=2)
    sent = batches(15)
    sends = []

    def drop_after_first(request, **_):
        sends.append(request)
        if len(sends) > 1:
            raise EndpointConnectionError(endpoint_url=url)

    submitter.client.meta.events.register("before-send.sqs.SendMessageBatch", drop_after_first)

    with pytest.raises(SubmitInterrupted, match=url) as caught:
        submitter.submit(sent)

    assert isinstance(caught.value, ProviderUnavailable)
    assert len(sends) == 3  # the first call, then the second one tried twice by botocore
    queued = [b for b, o in caught.value.outcomes.items() if o.queued]
    assert queued == list(sent)[:10]
    assert all(o.error is None for o in caught.value.outcomes.values())
