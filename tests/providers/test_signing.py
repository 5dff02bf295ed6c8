"""HMAC signatures of callback bodies: the first secret signs, every secret verifies."""

import hashlib
import hmac

import pytest

from providers.signing import sign, verify

BODY = b'{"schema":"offload.callback.v1","recipient_updates":[]}'
NEW, OLD = "new-secret-3f9a", "old-secret-77c1"


def test_signature_is_the_hex_hmac_sha256_a_worker_computes():
    expected = hmac.new(NEW.encode(), BODY, hashlib.sha256).hexdigest()
    assert sign(NEW, BODY) == expected
    assert sign(NEW.encode(), BODY) == expected


def test_signed_body_verifies():
    assert verify([NEW], BODY, sign(NEW, BODY))


def test_second_of_two_rotated_secrets_verifies():
    assert verify([NEW, OLD], BODY, sign(OLD, BODY))
    assert verify([NEW, OLD], BODY, sign(NEW, BODY))


def test_secret_no_longer_configured_fails():
    assert not verify([NEW], BODY, sign(OLD, BODY))


def test_body_altered_after_signing_fails():
    sig = sign(NEW, BODY)
    assert not verify([NEW], BODY.replace(b"[]", b"[ ]"), sig)


@pytest.mark.parametrize(
    "dress",
    [
        lambda s: f"  {s}\n",
        lambda s: f"sha256={s}",
        lambda s: f" SHA256={s} ",
        lambda s: s.upper(),
    ],
    ids=["whitespace", "prefix", "prefix-upper-and-spaces", "upper-hex"],
)
def test_whitespace_prefix_and_case_are_tolerated(dress):
    assert verify([NEW], BODY, dress(sign(NEW, BODY)))


@pytest.mark.parametrize(
    "signature",
    [None, "", "   ", "sha256=", "not-hex-" * 8, "ab" * 31, "ab" * 33, 12345],
    ids=[
        "none",
        "empty",
        "blank",
        "prefix-only",
        "non-hex",
        "too-short",
        "too-long",
        "not-a-string",
    ],
)
def test_missing_or_malformed_signature_is_false_not_an_error(signature):
    assert verify([NEW, OLD], BODY, signature) is False


def test_no_secret_configured_never_verifies():
    assert verify([], BODY, sign(NEW, BODY)) is False
    assert verify([""], BODY, hmac.new(b"", BODY, hashlib.sha256).hexdigest()) is False


def test_signing_with_an_empty_secret_is_refused():
    with pytest.raises(ValueError, match="callback_secrets"):
        sign("", BODY)
