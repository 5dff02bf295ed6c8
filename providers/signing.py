"""HMAC-SHA256 signatures of callback bodies (docs/callback.md: `X-Signature`).

Key rotation: the first configured secret signs, every configured secret verifies.
`verify` compares against all of them in constant time and never exits early, so
its timing does not reveal which secret (if any) matched.
"""

import hashlib
import hmac
import string
from collections.abc import Sequence

PREFIX = "sha256="
_HEX = frozenset(string.hexdigits)
_DIGEST_HEX_LEN = hashlib.sha256().digest_size * 2


def _key(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)


def sign(secret: str | bytes, body: bytes) -> str:
    """Hex HMAC-SHA256 of `body` under `secret`; raises ValueError for an empty secret."""
    key = _key(secret)
    if not key:
        raise ValueError("empty signing secret: set security.callback_secrets")
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def normalize(signature: str | None) -> str | None:
    """The lower-case hex digest inside `signature`, or None when it is not one.

    Tolerates surrounding whitespace and an optional `sha256=` prefix.
    """
    if not signature or not isinstance(signature, str):
        return None
    sig = signature.strip()
    if sig[: len(PREFIX)].lower() == PREFIX:
        sig = sig[len(PREFIX) :].strip()
    if len(sig) != _DIGEST_HEX_LEN or not _HEX.issuperset(sig):
        return None
    return sig.lower()


def verify(secrets: Sequence[str | bytes], body: bytes, signature: str | None) -> bool:
    """True when `signature` is the HMAC of `body` under any of `secrets`; never raises.

    Every secret is tried (no early exit); empty secrets never match. False for a
    missing, empty or non-hex signature, and for an empty secret list.
    """
    sig = normalize(signature)
    if sig is None:
        return False
    wanted = sig.encode("ascii")
    matched = False
    for secret in secrets:
        key = _key(secret)
        if not key:
            continue
        expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii")
        matched |= hmac.compare_digest(expected, wanted)
    return matched
