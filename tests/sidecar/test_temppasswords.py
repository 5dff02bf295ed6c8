"""Temporary passwords: random, to the site's policy, never shown by repr, sealed at rest."""

import pytest
from cryptography.fernet import Fernet

from sidecar.config import Config, PasswordPolicyConfig
from sidecar.errors import ConfigError
from sidecar.temppasswords import Sealer, generate, problems

POLICIES = {
    "moodle default": PasswordPolicyConfig(),
    "strict": PasswordPolicyConfig(
        min_length=24, digits=4, lower=4, upper=4, nonalphanum=4, max_consecutive_identical=1
    ),  # fmt: skip
    "no policy": PasswordPolicyConfig(min_length=1, digits=0, lower=0, upper=0, nonalphanum=0),
}


@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
def test_generated_passwords_satisfy_the_policy_and_differ(policy):
    made = [generate(policy) for _ in range(300)]
    assert all(problems(p, policy) == [] for p in made)
    assert len(set(made)) == len(made)
    assert all(len(p) >= max(16, policy.min_length) for p in made)


def test_the_policy_check_names_what_is_missing():
    policy = PasswordPolicyConfig(max_consecutive_identical=2)
    assert problems("abc", policy) == [
        "at least 8 characters", "at least 1 digits", "at least 1 upper-case letters",
        "at least 1 other characters",
    ]  # fmt: skip
    assert problems("Aaaa-1234", policy) == ["at most 2 identical characters in a row"]


def test_a_password_never_shows_in_a_repr_or_format():
    password = generate(PasswordPolicyConfig())
    assert str(password) not in repr(password)
    assert str(password) not in repr([password]) and str(password) not in f"{[password]}"


def test_sealed_passwords_open_with_the_key_only():
    key = Fernet.generate_key().decode()
    sealer = Sealer.from_config(Config.model_validate({"security": {"encryption_key": key}}))
    password = generate(PasswordPolicyConfig())
    sealed = sealer.seal(password)
    assert password not in sealed and sealer.open(sealed) == password
    other = Sealer.of([Fernet.generate_key().decode()])
    with pytest.raises(ConfigError, match="encryption_key changed"):
        other.open(sealed)
    with pytest.raises(ConfigError, match="security.encryption_key is not set"):
        Sealer.from_config(Config())
