"""The wire formats: batch messages split by size (never truncated), callbacks parsed strictly."""

import base64
import gzip
import json
import random
import string
import uuid

import pytest

from providers.base import ProviderError
from providers.message import (
    BATCH_SCHEMA,
    CALLBACK_SCHEMA,
    ENVELOPE_SCHEMA,
    Callback,
    MessageError,
    MessageTooLarge,
    RecipientUpdate,
    build_batch_messages,
    build_batch_parts,
    decode_body,
    make_callback,
    parse_callback,
)

JOB_ID, BATCH_ID = str(uuid.uuid4()), str(uuid.uuid4())

HEADER = {
    "job_id": JOB_ID, "batch_id": BATCH_ID, "batch_index": 0, "batch_count": 250,
    "tenant_id": 123, "type": "send_reminder", "courseid": 101, "created_by": 50,
    "actions": {"email": True, "certificate": True},
    "email": {"from": "noreply@example.org", "reply_to": None, "subject": "Reminder",
              "template_id": "reminder_v1"},
    "certificate": {"template_id": "default", "bucket": "certs", "key_prefix": "2025/",
                    "url_ttl": 3600},
    "template_data": {"course_name": "Sécurité au travail",
                      "course_url": "https://moodle.example.org/course/view.php?id=101"},
    "callback": {"url": "https://sidecar.example.org/callback", "mode": "http"},
    "timestamp": "2025-11-18T12:00:00Z",
}  # fmt: skip

NAMES = [("Łukasz", "Żółć"), ("Дмитрий", "Иванов"), ("Ελένη", "Παπαδοπούλου"), ("John", "Doe")]


def recipients(count, *, seed=7, words=400):
    """Recipients with varied, only partly compressible bodies (random words)."""
    rnd = random.Random(seed)
    vocab = [
        "".join(rnd.choice(string.ascii_lowercase) for _ in range(rnd.randint(2, 9)))
        for _ in range(2000)
    ]
    out = []
    for i in range(count):
        first, last = NAMES[i % len(NAMES)]
        text = " ".join(rnd.choice(vocab) for _ in range(rnd.randint(min(5, words), words)))
        out.append({
            "userid": 1001 + i, "email": f"u{i}@example.com", "firstname": first, "lastname": last,
            "subject": f"Reminder for {first}", "html": f"<p>{text}</p>", "text": text,
            "certificate_html": None, "vars": {"n": i},
        })  # fmt: skip
    return out


def decoded(bodies):
    return [decode_body(b) for b in bodies]


@pytest.mark.parametrize("max_bytes", [12_000, 20_000, 64_000, 131_072, 262_144])
@pytest.mark.parametrize("compress", [None, True, False], ids=["auto", "gzip", "plain"])
def test_split_keeps_every_recipient_exactly_once_in_order_and_under_the_limit(max_bytes, compress):
    people = recipients(150)
    bodies = build_batch_messages(HEADER, people, max_bytes=max_bytes, compress=compress)
    assert all(len(b) <= max_bytes for b in bodies)
    parts = decoded(bodies)
    assert [r for p in parts for r in p["recipients"]] == people
    for p in parts:
        assert p["schema"] == BATCH_SCHEMA
        assert {k: p[k] for k in HEADER} == HEADER
    if len(parts) > 1:
        assert [p["part"] for p in parts] == list(range(len(parts)))
        assert {p["part_count"] for p in parts} == {len(parts)}
    else:
        assert "part" not in parts[0] and "part_count" not in parts[0]


def test_plain_split_uses_as_few_messages_as_the_sizes_allow():
    people = recipients(120)
    max_bytes = 50_000
    bodies = build_batch_messages(HEADER, people, max_bytes=max_bytes, compress=False)
    # no two neighbouring parts could have been one message
    parts = decoded(bodies)
    for a, b in zip(parts, parts[1:], strict=False):
        merged = dict(a, recipients=a["recipients"] + b["recipients"])
        merged.pop("part"), merged.pop("part_count")
        assert (
            len(json.dumps(merged, ensure_ascii=False, separators=(",", ":")).encode())
            > max_bytes - 40
        )


def test_batch_that_fits_is_one_message_without_part_keys():
    people = recipients(3, words=10)
    [body] = build_batch_messages(HEADER, people, max_bytes=262_144)
    msg = decode_body(body)
    assert msg["schema"] == BATCH_SCHEMA and msg["recipients"] == people
    assert "part" not in msg


def test_international_names_travel_as_utf8_text():
    [body] = build_batch_messages(HEADER, recipients(4, words=5), max_bytes=262_144, compress=False)
    assert "Żółć".encode() in body and "Παπαδοπούλου".encode() in body


def test_compression_is_used_when_it_saves_a_third():
    repetitive = [
        dict(r, html="<p>" + "Please complete the course. " * 200 + "</p>")
        for r in recipients(20, words=5)
    ]
    [body] = build_batch_messages(HEADER, repetitive, max_bytes=1_048_576)
    envelope = json.loads(body)
    assert envelope["schema"] == ENVELOPE_SCHEMA and envelope["encoding"] == "gzip+base64"
    inner = json.loads(gzip.decompress(base64.b64decode(envelope["data"])))
    assert inner["recipients"] == repetitive


def test_compression_is_not_used_when_it_saves_little_and_is_not_needed():
    rnd = random.Random(3)
    noisy = [
        dict(r, html=base64.b64encode(rnd.randbytes(3000)).decode()) for r in recipients(5, words=5)
    ]
    [body] = build_batch_messages(HEADER, noisy, max_bytes=1_048_576)
    assert json.loads(body)["schema"] == BATCH_SCHEMA


def test_compression_saves_messages_when_the_plain_batch_does_not_fit():
    people = recipients(150)
    plain = build_batch_messages(HEADER, people, max_bytes=64_000, compress=False)
    auto = build_batch_messages(HEADER, people, max_bytes=64_000)
    assert len(auto) < len(plain)
    assert all(json.loads(b)["schema"] == ENVELOPE_SCHEMA for b in auto)


def test_a_batch_over_the_limit_that_fits_compressed_is_one_message_without_part_keys():
    people = recipients(200, words=20)
    assert len(build_batch_messages(HEADER, people, max_bytes=64_000, compress=False)) > 1
    [body] = build_batch_messages(HEADER, people, max_bytes=64_000)
    assert len(body) <= 64_000
    batch = decode_body(body)
    assert "part" not in batch and "part_count" not in batch
    assert [r["userid"] for r in batch["recipients"]] == [r["userid"] for r in people]


@pytest.mark.parametrize("compress", [None, True, False], ids=["auto", "gzip", "plain"])
def test_parts_name_the_recipients_each_body_carries(compress):
    people = recipients(40)
    parts = build_batch_parts(HEADER, people, max_bytes=20_000, compress=compress)
    assert len(parts) > 1
    assert [p.body for p in parts] == build_batch_messages(
        HEADER, people, max_bytes=20_000, compress=compress
    )
    for p in parts:
        assert p.userids == tuple(r["userid"] for r in decode_body(p.body)["recipients"])
    assert [u for p in parts for u in p.userids] == [r["userid"] for r in people]


def test_compress_false_never_wraps_and_true_always_wraps():
    people = [dict(r, html="same words " * 300) for r in recipients(10, words=5)]
    assert all(
        json.loads(b)["schema"] == BATCH_SCHEMA
        for b in build_batch_messages(HEADER, people, max_bytes=1_048_576, compress=False)
    )
    tiny = recipients(1, words=2)
    assert (
        json.loads(build_batch_messages(HEADER, tiny, max_bytes=1_048_576, compress=True)[0])[
            "schema"
        ]
        == ENVELOPE_SCHEMA
    )


def test_single_recipient_too_large_alone_names_batch_and_userid():
    people = recipients(5, words=5)
    people[2] = dict(people[2], html="x" * 20_000)
    with pytest.raises(MessageTooLarge) as err:
        build_batch_messages(HEADER, people, max_bytes=10_000, compress=False)
    assert BATCH_ID in str(err.value) and "1003" in str(err.value)
    assert isinstance(err.value, ProviderError)


def test_incompressible_recipient_too_large_even_compressed_raises():
    rnd = random.Random(5)
    people = recipients(3, words=5)
    people[0] = dict(people[0], html=base64.b64encode(rnd.randbytes(30_000)).decode())
    with pytest.raises(MessageTooLarge, match="userid 1001"):
        build_batch_messages(HEADER, people, max_bytes=16_000)


def test_header_too_large_alone_is_named():
    big = dict(HEADER, template_data={"course_name": "x" * 5000})
    with pytest.raises(MessageTooLarge, match="header"):
        build_batch_messages(big, recipients(2, words=2), max_bytes=2000, compress=False)


def test_header_must_not_carry_recipients():
    with pytest.raises(ValueError, match="recipients"):
        build_batch_messages(dict(HEADER, recipients=[]), recipients(1), max_bytes=100_000)


# --- decode_body ---------------------------------------------------------------------------


def envelope(data: str, encoding="gzip+base64") -> bytes:
    return json.dumps({"schema": ENVELOPE_SCHEMA, "encoding": encoding, "data": data}).encode()


def test_decode_body_passes_plain_json_through():
    assert decode_body(b'{"schema": "offload.batch.v1", "a": 1}') == {
        "schema": BATCH_SCHEMA,
        "a": 1,
    }


@pytest.mark.parametrize(
    "raw, fragment",
    [
        (b'{"schema": ', "invalid JSON"),
        (b"\xff\xfe{}", "JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (envelope("abc", encoding="br"), "envelope.encoding"),
        (envelope("***"), "invalid base64"),
        (envelope(base64.b64encode(b"not gzip").decode()), "invalid gzip"),
        (
            envelope(base64.b64encode(gzip.compress(b"[1]")).decode()),
            "envelope.data: expected a JSON object",
        ),
        (envelope(base64.b64encode(gzip.compress(envelope("x"))).decode()), "nesting"),
        (envelope(base64.b64encode(gzip.compress(b'{"a": 1}')[:-6]).decode()), "truncated"),
    ],
    ids=[
        "truncated-json",
        "not-utf8",
        "not-object",
        "unknown-encoding",
        "bad-base64",
        "bad-gzip",
        "inner-not-object",
        "nested-envelope",
        "truncated-gzip",
    ],  # fmt: skip
)
def test_decode_body_rejects_bad_bodies_and_envelopes(raw, fragment):
    with pytest.raises(MessageError, match=fragment):
        decode_body(raw)


def test_decode_body_refuses_a_gzip_bomb():
    bomb = envelope(base64.b64encode(gzip.compress(b'{"a":"' + b"0" * 2_000_000 + b'"}')).decode())
    with pytest.raises(MessageError, match="over"):
        decode_body(bomb, max_decoded=1_000_000)


# --- callbacks ---------------------------------------------------------------------------

CONTRACT_EXAMPLE = {
    "schema": "offload.callback.v1",
    "callback_id": "0b7e5d2c-6f3a-4c1e-9d8b-2a4f6e8c0d1b",
    "job_id": "5f0c6a1e-2b3d-4e5f-8a9b-0c1d2e3f4a5b",
    "batch_id": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
    "recipient_updates": [
        {"userid": 1001, "status": "sent", "external_id": "ses-message-id",
         "certificate_key": "certs/2025/101/1001.pdf", "timesent": 1700308800},
        {"userid": 1002, "status": "failed", "error_message": "Email bounce: invalid address",
         "attempts": 3},
    ],
    "timestamp": 1700308900,
}  # fmt: skip


def test_parse_callback_accepts_the_contract_example():
    cb = parse_callback(json.dumps(CONTRACT_EXAMPLE).encode())
    assert cb == Callback(
        callback_id=CONTRACT_EXAMPLE["callback_id"],
        job_id=CONTRACT_EXAMPLE["job_id"],
        batch_id=CONTRACT_EXAMPLE["batch_id"],
        timestamp=1700308900,
        updates=(
            RecipientUpdate(
                1001,
                "sent",
                "ses-message-id",
                "certs/2025/101/1001.pdf",
                None,
                1700308800,
                None,
                None,
            ),
            RecipientUpdate(
                1002, "failed", None, None, None, None, "Email bounce: invalid address", 3
            ),
        ),
    )


def test_parse_callback_lowercases_ids_and_accepts_explicit_nulls():
    raw = dict(CONTRACT_EXAMPLE, job_id=CONTRACT_EXAMPLE["job_id"].upper())
    raw["recipient_updates"] = [
        {"userid": 7, "status": "sent", "external_id": None, "certificate_url": "https://r2/x.pdf"}
    ]
    cb = parse_callback(json.dumps(raw).encode())
    assert cb.job_id == CONTRACT_EXAMPLE["job_id"]
    assert cb.updates[0].certificate_url == "https://r2/x.pdf" and cb.updates[0].external_id is None


def with_top(**over):
    return {**CONTRACT_EXAMPLE, **over}


def with_update(index=1, drop=(), **over):
    updates = [dict(u) for u in CONTRACT_EXAMPLE["recipient_updates"]]
    updates[index].update(over)
    for key in drop:
        del updates[index][key]
    return with_top(recipient_updates=updates)


def without(key):
    return {k: v for k, v in CONTRACT_EXAMPLE.items() if k != key}


MALFORMED = [
    (
        "wrong-schema",
        with_top(schema="offload.callback.v2"),
        "schema: expected 'offload.callback.v1'",
    ),
    ("no-schema", without("schema"), "schema: expected"),
    ("callback-id-not-uuid", with_top(callback_id="1234"), "callback_id: expected a UUID string"),
    ("job-id-number", with_top(job_id=5), "job_id: expected a UUID string"),
    ("batch-id-missing", without("batch_id"), "batch_id: required"),
    ("timestamp-string", with_top(timestamp="1700308900"), "timestamp: expected an integer"),
    ("timestamp-bool", with_top(timestamp=True), "timestamp: expected an integer"),
    ("timestamp-float", with_top(timestamp=1700308900.5), "timestamp: expected an integer"),
    ("updates-missing", without("recipient_updates"), "recipient_updates: required"),
    (
        "updates-object",
        with_top(recipient_updates={"userid": 1}),
        "recipient_updates: expected a list",
    ),
    ("updates-empty", with_top(recipient_updates=[]), "recipient_updates: expected at least one"),
    (
        "updates-too-many",
        with_top(recipient_updates=[{"userid": 1, "status": "sent"}] * 10_001),
        "over the limit of 10000",
    ),
    (
        "update-not-object",
        with_top(recipient_updates=[5]),
        r"recipient_updates\[0\]: expected an object",
    ),
    (
        "userid-string",
        with_update(userid="1002"),
        r"recipient_updates\[1\]\.userid: expected an integer",
    ),
    (
        "userid-bool",
        with_update(userid=True),
        r"recipient_updates\[1\]\.userid: expected an integer, got a boolean",
    ),
    (
        "userid-zero",
        with_update(userid=0),
        r"recipient_updates\[1\]\.userid: expected a positive integer",
    ),
    ("userid-missing", with_update(drop=["userid"]), r"recipient_updates\[1\]\.userid: required"),
    (
        "status-unknown",
        with_update(status="delivered"),
        r"recipient_updates\[1\]\.status: expected one of",
    ),
    ("status-missing", with_update(drop=["status"]), r"recipient_updates\[1\]\.status: required"),
    (
        "attempts-string",
        with_update(attempts="three"),
        r"recipient_updates\[1\]\.attempts: expected an integer",
    ),
    (
        "attempts-negative",
        with_update(attempts=-1),
        r"recipient_updates\[1\]\.attempts: expected a non-negative",
    ),
    (
        "timesent-bool",
        with_update(0, timesent=False),
        r"recipient_updates\[0\]\.timesent: expected an integer",
    ),
    (
        "external-id-number",
        with_update(0, external_id=42),
        r"recipient_updates\[0\]\.external_id: expected a string",
    ),
    (
        "error-message-list",
        with_update(error_message=["x"]),
        r"recipient_updates\[1\]\.error_message: expected a string",
    ),
    (
        "update-unknown-key",
        with_update(colour="red"),
        r"recipient_updates\[1\]\.colour: unknown key",
    ),
    ("top-unknown-key", with_top(worker="aws"), "worker: unknown key"),
]


@pytest.mark.parametrize("body, message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_parse_callback_rejects_malformed_input_naming_the_field(body, message):
    with pytest.raises(MessageError, match=message):
        parse_callback(json.dumps(body).encode())


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b'"text"', b"\xff"],
    ids=["empty", "truncated", "list", "string", "binary"],
)
def test_parse_callback_rejects_non_objects(raw):
    with pytest.raises(MessageError, match="body"):
        parse_callback(raw)


def test_make_callback_round_trips_through_parse_callback():
    updates = CONTRACT_EXAMPLE["recipient_updates"]
    raw = make_callback(JOB_ID, BATCH_ID, updates, timestamp=1700308900)
    cb = parse_callback(raw)
    assert json.loads(raw)["schema"] == CALLBACK_SCHEMA
    assert (cb.job_id, cb.batch_id, cb.timestamp) == (JOB_ID, BATCH_ID, 1700308900)
    assert [u.userid for u in cb.updates] == [1001, 1002]
    assert uuid.UUID(cb.callback_id).version == 4


def test_make_callback_refuses_what_the_sidecar_would_refuse():
    with pytest.raises(MessageError, match=r"recipient_updates\[0\]\.status"):
        make_callback(JOB_ID, BATCH_ID, [{"userid": 1, "status": "queued"}])
