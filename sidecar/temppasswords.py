"""Temporary passwords: generated with `secrets` to the site's policy, sealed with Fernet.

A password exists in plain text only in memory: it is sealed (`security.encryption_key`)
the moment it is generated, the sealed form is what the ledger holds, and it is opened
only to set it in Moodle and to render the one email that carries it. `Plain` keeps it
out of reprs and log lines.

Key rotation: `security.encryption_key` seals; it and `security.previous_encryption_keys`
open (MultiFernet). `moodle-offload keys rotate` (sidecar.keyrotation) re-seals what an old
key sealed, so the old key can go.
"""

import secrets
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from sidecar.config import Config, PasswordPolicyConfig
from sidecar.errors import ConfigError

# No look-alikes (l 1 I O 0 o), nothing HTML, a template or a shell would mangle.
LOWER = "abcdefghijkmnpqrstuvwxyz"
UPPER = "ABCDEFGHJKLMNPQRSTUVWXYZ"
DIGITS = "23456789"
SPECIAL = "*-#!@%+=?"
LENGTH = 16
PLACEHOLDER = "(temporary password: set when the email is sent)"


class Plain(str):
    """A password in plain text: a str whose repr never shows it."""

    def __repr__(self) -> str:
        return "Plain('********')"


def problems(password: str, policy: PasswordPolicyConfig) -> list[str]:
    """What `password` lacks under `policy` (Moodle's check_password_policy); [] when fine."""
    out = []
    if len(password) < policy.min_length:
        out.append(f"at least {policy.min_length} characters")
    for need, count, what in (
        (policy.digits, sum(c.isdigit() for c in password), "digits"),
        (policy.lower, sum(c.islower() for c in password), "lower-case letters"),
        (policy.upper, sum(c.isupper() for c in password), "upper-case letters"),
        (policy.nonalphanum, sum(not c.isalnum() for c in password), "other characters"),
    ):
        if count < need:
            out.append(f"at least {need} {what}")
    limit = policy.max_consecutive_identical
    if limit and any(password[i : i + limit + 1] == password[i] * (limit + 1)
                     for i in range(len(password) - limit)):  # fmt: skip
        out.append(f"at most {limit} identical characters in a row")
    return out


def generate(policy: PasswordPolicyConfig) -> Plain:
    """A new random password that satisfies `policy`."""
    need = policy.digits + policy.lower + policy.upper + policy.nonalphanum
    length = max(LENGTH, policy.min_length, need)
    rng = secrets.SystemRandom()
    alphabet = LOWER + UPPER + DIGITS + SPECIAL
    while True:
        chars = (
            [secrets.choice(DIGITS) for _ in range(policy.digits)]
            + [secrets.choice(LOWER) for _ in range(policy.lower)]
            + [secrets.choice(UPPER) for _ in range(policy.upper)]
            + [secrets.choice(SPECIAL) for _ in range(policy.nonalphanum)]
        )
        chars += [secrets.choice(alphabet) for _ in range(length - len(chars))]
        rng.shuffle(chars)
        password = "".join(chars)
        if not problems(password, policy):
            return Plain(password)


@dataclass(frozen=True)
class Sealer:
    """Seals temporary passwords with the configured Fernet key; opens them with it or a
    previous key."""

    fernet: MultiFernet
    current: Fernet  # the key that seals

    @classmethod
    def from_config(cls, config: Config) -> "Sealer":
        """Raises ConfigError when security.encryption_key is not set."""
        keys = config.security.fernet_keys()
        if not keys:
            raise ConfigError(
                "security.encryption_key is not set: temporary passwords are kept encrypted "
                "with it; make one with `moodle-offload keys new`"
            )
        return cls.of(keys)

    @classmethod
    def of(cls, keys: list[str]) -> "Sealer":
        fernets = [Fernet(k) for k in keys]
        return cls(MultiFernet(fernets), fernets[0])

    def seal(self, password: str) -> str:
        return self.fernet.encrypt(password.encode("utf-8")).decode("ascii")

    def open(self, token: str) -> Plain:
        """The password sealed in `token`; raises ConfigError when no configured key opens
        it (security.encryption_key changed and the old key is not among
        security.previous_encryption_keys)."""
        try:
            return Plain(self.fernet.decrypt(token.encode("ascii")).decode("utf-8"))
        except InvalidToken:
            raise ConfigError(
                "a temporary password cannot be decrypted: security.encryption_key changed "
                "since it was generated; put the old key in "
                "security.previous_encryption_keys"
            ) from None

    def is_current(self, token: str) -> bool:
        """Whether the sealing key sealed `token` (nothing for `keys rotate` to do)."""
        try:
            self.current.decrypt(token.encode("ascii"))
        except InvalidToken:
            return False
        return True

    def reseal(self, token: str) -> str:
        """`token` sealed again with the sealing key; raises ConfigError as `open` does."""
        try:
            return self.fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken:
            raise ConfigError(
                "a temporary password cannot be decrypted by any configured key"
            ) from None

    def __repr__(self) -> str:
        return "Sealer(***)"
