"""HMAC-SHA256 signatures of callback bodies (docs/callback.md: `X-Signature`), and signed
URL tokens.

Key rotation: the first configured secret signs, every configured secret verifies.
`verify` compares against all of them in constant time and never exits early, so
its timing does not reveal which secret (if any) matched.

Tokens (`seal`/`unseal`) carry a short URL-safe payload in clear with a truncated
HMAC-SHA256 under a key made for their one purpose by `derive_key`, so a key given for
something else (a Fernet key) is never used as it is.
"""

import base64
import hashlib
import hmac
import re
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


# --- tokens ----------------------------------------------------------------------------------

#: bytes of HMAC a token keeps (128 bits: half the SHA-256 output, RFC 2104's lower bound)
TOKEN_MAC_BYTES = 16
MAX_TOKEN_LEN = 200
_PAYLOAD = re.compile(r"[A-Za-z0-9_~-]+(?:\.[A-Za-z0-9_~-]+)*")


def derive_key(secret: str | bytes, purpose: str) -> bytes:
    """A 32-byte key for `purpose` alone, by HKDF-SHA256 from `secret`.

    Raises ValueError for an empty secret or purpose.
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = _key(secret)
    if not key or not purpose:
        raise ValueError("derive_key needs a secret and a purpose")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode("utf-8"))
    return hkdf.derive(key)


def _mac(key: bytes, payload: str) -> str:
    digest = hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest()[:TOKEN_MAC_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def seal(key: bytes, payload: str) -> str:
    """`payload.MAC`: the payload in clear (URL-safe: letters, digits, `_~-`, dots between)
    and its base64url HMAC. Raises ValueError for an empty key or an unsafe payload."""
    if not key:
        raise ValueError("empty token key")
    if not _PAYLOAD.fullmatch(payload):
        raise ValueError("a token payload is letters, digits, _ ~ - and dots between them")
    token = f"{payload}.{_mac(key, payload)}"
    if len(token) > MAX_TOKEN_LEN:
        raise ValueError(f"token over {MAX_TOKEN_LEN} characters")
    return token


def unseal(key: bytes, token: str | None) -> str | None:
    """The payload of a token `seal(key, ...)` made; None when it is malformed, forged or
    altered (compared in constant time). Never raises."""
    if not key or not isinstance(token, str) or len(token) > MAX_TOKEN_LEN:
        return None
    payload, _, mac = token.rpartition(".")
    if not payload or not _PAYLOAD.fullmatch(payload):
        return None
    if not hmac.compare_digest(_mac(key, payload).encode("ascii"), mac.encode("ascii", "replace")):
        return None
    return payload
