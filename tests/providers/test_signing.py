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


# --- tokens ----------------------------------------------------------------------------------


def test_derived_keys_differ_by_purpose_and_are_not_the_secret():
    from providers.signing import derive_key

    secret = "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyMTI="
    a, b = derive_key(secret, "links v1"), derive_key(secret, "other v1")
    assert len(a) == 32 and a != b and a == derive_key(secret.encode(), "links v1")
    assert secret.encode() not in a
    with pytest.raises(ValueError):
        derive_key("", "links v1")


def test_a_sealed_token_opens_to_its_payload_and_is_url_safe():
    from providers.signing import derive_key, seal, unseal

    key = derive_key(NEW, "t")
    token = seal(key, "1001.reminders")
    assert token.startswith("1001.reminders.") and len(token) == len("1001.reminders.") + 22
    assert set(token) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
    assert unseal(key, token) == "1001.reminders"


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.replace("1001.", "1002.", 1),  # another learner
        lambda t: t.replace(".reminders.", ".custom.", 1),  # another kind
        lambda t: t[:-1] + ("x" if t[-1] != "x" else "y"),  # the MAC's last character
        lambda t: t.rpartition(".")[0],  # no MAC
        lambda t: t + "A",  # a longer MAC
        lambda t: "",
        lambda t: "." + t,
        lambda t: t.replace("1001", "1001\n"),
        lambda t: t + "é",
    ],
)
def test_an_altered_or_malformed_token_is_refused(change):
    from providers.signing import derive_key, seal, unseal

    key = derive_key(NEW, "t")
    assert unseal(key, change(seal(key, "1001.reminders"))) is None


def test_a_token_of_another_key_is_refused():
    from providers.signing import derive_key, seal, unseal

    token = seal(derive_key(OLD, "t"), "1001.reminders")
    assert unseal(derive_key(NEW, "t"), token) is None
    assert unseal(derive_key(OLD, "other"), token) is None
