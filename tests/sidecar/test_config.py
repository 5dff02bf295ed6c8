"""The configuration file: every key documented, errors name file and key, secrets stay secret."""

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import BaseModel

from sidecar.config import Config, load
from sidecar.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"
ENV = {
    "MOODLE_TOKEN": "moodle-token-0123456789",
    "CALLBACK_SECRET": "callback-secret-abcdef",
    "OFFLOAD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "CF_WORKER_TOKEN": "cf-worker-token-xyz",
    "R2_SECRET_ACCESS_KEY": "r2-secret-key-xyz",
    "SMTP_PASSWORD": "smtp-password-xyz",
}


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def keys_of(model, prefix=""):
    for name, field in model.model_fields.items():
        key = field.alias or name
        ann = field.annotation
        args = getattr(ann, "__args__", (ann,))
        inner = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if inner is None and isinstance(ann, type) and issubclass(ann, BaseModel):
            inner = ann
        if inner is not None:
            yield from keys_of(inner, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def test_example_config_loads_and_documents_every_key():
    config = load(EXAMPLE, ENV)
    assert config.moodle.token.get_secret_value() == ENV["MOODLE_TOKEN"]
    text = EXAMPLE.read_text()

    def documented(key):
        name = key.rsplit(".", 1)[-1]
        return f"{name} =" in text or f"# {name} =" in text

    missing = [k for k in keys_of(Config) if not documented(k)]
    assert missing == []


def test_minimal_config_gets_safe_defaults(tmp_path):
    config = load(write(tmp_path, ""), {})
    assert config.server.listen == "127.0.0.1:8765" and config.offload.job_batch_size == 200
    assert config.offload.enabled is False and config.moodle is None


@pytest.mark.parametrize(
    "text, key",
    [
        (
            "[moodle]\nurl = 'https://m.example'\ntokn = 'x'\n",
            "moodle.tokn: unknown key (did you mean 'token'?)",
        ),
        ("[server]\nlisten_port = 1\n", "server.listen_port: unknown key"),
        ("[[companies]]\nid = 3\nthreshhold = 10\n", "companies.0.threshhold: unknown key"),
        ("[providers.local]\nsmtp_port = 'twenty-five'\n", "providers.local.smtp_port:"),
        ("[moodle]\ntoken = 'abc'\n", "moodle.url: required key is missing"),
        ("[offload]\nprovider = 'azure'\n", "offload.provider:"),
        ("[schedules]\ntimezone = 'Mars/Olympus'\n", "schedules.timezone:"),
    ],
    ids=["typo", "unknown", "company", "type", "missing", "choice", "timezone"],
)
def test_errors_name_the_file_and_the_dotted_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(path, {})
    message = str(err.value)
    assert message.startswith(f"{path}: ") and key in message and "\n" not in message


def test_cloud_offload_requires_its_section_and_a_callback_secret(tmp_path):
    with pytest.raises(ConfigError, match="providers.aws"):
        load(write(tmp_path, "[offload]\nenabled = true\nprovider = 'aws'\n"), {})


def test_secrets_from_env_file_and_credentials_directory(tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "smtp").write_text("pw-from-credentials\n")
    (creds / "secrets.txt").write_text("first-secret\nsecond-secret\n")
    text = (
        "[moodle]\nurl = 'https://m.example'\ntoken = 'env:TOKEN'\n"
        "[security]\ncallback_secrets_file = 'secrets.txt'\n"
        "[providers.local]\nsmtp_password_file = 'smtp'\n"
    )
    env = {"TOKEN": "tok-from-env", "CREDENTIALS_DIRECTORY": str(creds)}
    config = load(write(tmp_path, text), env)
    assert config.moodle.token.get_secret_value() == "tok-from-env"
    secrets = [s.get_secret_value() for s in config.security.callback_secrets]
    assert secrets == ["first-secret", "second-secret"]
    assert config.providers.local.smtp_password.get_secret_value() == "pw-from-credentials"
    for shown in (repr(config), str(config)):
        assert (
            "tok-from-env" not in shown
            and "pw-from-credentials" not in shown
            and "first-secret" not in shown
        )


def test_missing_env_variable_names_key_and_variable(tmp_path):
    path = write(tmp_path, "[moodle]\nurl = 'https://m.example'\ntoken = 'env:NOPE'\n")
    with pytest.raises(ConfigError, match=r"moodle.token: environment variable NOPE is not set"):
        load(path, {})


def test_secret_given_twice_is_an_error(tmp_path):
    path = write(tmp_path, "[moodle]\nurl = 'https://m.example'\ntoken = 'a'\ntoken_file = 'b'\n")
    with pytest.raises(ConfigError, match="either token or token_file"):
        load(path, {})


def test_a_wrong_secret_is_never_echoed(tmp_path):
    path = write(tmp_path, "[security]\nencryption_key = 'hunter2-not-a-fernet-key'\n")
    with pytest.raises(ConfigError) as err:
        load(path, {})
    assert "security.encryption_key" in str(err.value) and "hunter2" not in str(err.value)
