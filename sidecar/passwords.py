"""Password hashes for local dashboard accounts: scrypt (cryptography), random salt.

A hash is one string, `scrypt$<n>$<r>$<p>$<salt>$<key>` (salt and key url-safe base64),
so the parameters travel with it and a later release can raise them without breaking
the hashes already stored. Verifying compares in constant time.
"""

import base64
import hmac
import os

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

MIN_LENGTH = 12
MAX_LENGTH = 1024
#: 2**15 x 8 x 128 bytes = 32 MiB and ~0.1 s a guess: OWASP's scrypt floor is 2**17 x 8
#: at p=1 for 128 MiB; a sign-in is rare and rate-limited, 32 MiB keeps small hosts safe.
N, R, P = 2**15, 8, 1
_KEY_LEN = 32


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_strength(password: str) -> None:
    """Raises ValueError saying what is wrong with a new password (too short or too long)."""
    if len(password) < MIN_LENGTH:
        raise ValueError(
            f"the password is {len(password)} characters; use at least {MIN_LENGTH} "
            "(a passphrase of a few words is easy to type and hard to guess)"
        )
    if len(password) > MAX_LENGTH:
        raise ValueError(f"the password is over {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    """The stored form of `password`, with a fresh random salt."""
    salt = os.urandom(16)
    key = Scrypt(salt=salt, length=_KEY_LEN, n=N, r=R, p=P).derive(password.encode("utf-8"))
    return f"scrypt${N}${R}${P}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches `stored` (a `hash_password` string); False for a
    malformed hash. Never raises."""
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt" or len(password) > MAX_LENGTH:
            return False
        expected = _unb64(key)
        got = Scrypt(salt=_unb64(salt), length=len(expected), n=int(n), r=int(r), p=int(p))
        return hmac.compare_digest(got.derive(password.encode("utf-8")), expected)
    except (ValueError, TypeError):
        return False
