"""The configuration file: every key documented, errors name file and key, secrets stay secret."""

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import BaseModel, ValidationError

from sidecar.config import Config, FractionalSeconds, Seconds, load
from sidecar.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"
ENV = {
    "MOODLE_TOKEN": "moodle-token-0123456789",
    "CALLBACK_SECRET": "callback-secret-abcdef",
    "OFFLOAD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
    "CF_API_TOKEN": "cf-worker-token-xyz",
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


def fields_of(model, prefix=""):
    for name, field in model.model_fields.items():
        key = f"{prefix}{field.alias or name}"
        args = getattr(field.annotation, "__args__", (field.annotation,))
        inner = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        yield from fields_of(inner, f"{key}.") if inner is not None else [(key, field)]


DURATION_WORDS = ("interval", "timeout", "ttl", "seconds", "skew", "backoff", "delay", "wait")


def test_every_duration_key_takes_units():
    validators = {Seconds.__metadata__[0], FractionalSeconds.__metadata__[0]}

    def takes_units(field):
        items = getattr(field.annotation, "__args__", ())  # tuple[FractionalSeconds, ...]
        metadata = [*field.metadata, *(m for a in items for m in getattr(a, "__metadata__", ()))]
        return any(m in validators for m in metadata)

    durations = [k for k, _ in fields_of(Config) if any(w in k for w in DURATION_WORDS)]
    assert "schedules.sync_interval" in durations and "offload.retry.backoff" in durations
    assert [k for k, f in fields_of(Config) if k in durations and not takes_units(f)] == []


def test_durations_take_seconds_or_units(tmp_path):
    config = load(write(tmp_path, (
        "[server]\ndrain_timeout = '1.5s'\n"
        "[security]\ncallback_max_skew = '5m'\n"
        "[offload]\npresigned_url_ttl = '7d'\n"
        "[offload.retry]\nbackoff = [30, '5m', '1h30m']\n"
        "[schedules]\nsync_interval = '1h'\ntick_interval = '90s'\n"
    )), {})  # fmt: skip
    assert config.server.drain_timeout == 1.5 and config.security.callback_max_skew == 300
    assert config.offload.presigned_url_ttl == 604_800
    assert config.offload.retry.backoff == (30, 300, 5400)
    assert config.schedules.sync_interval == 3600 and config.schedules.tick_interval == 90
    assert isinstance(config.schedules.sync_interval, int)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("sync_interval = '1 hour'",
         'schedules.sync_interval: not a duration: give seconds or a string with a unit: '
         '300, "90s", "5m", "1h", "2d" or "1h30m"'),
        ("sync_interval = 5", "schedules.sync_interval: must be at least 10 seconds (give "),
        ("sync_interval = '5s'", "schedules.sync_interval: must be at least 10 seconds (give "),
        ("tick_interval = '2h'",
         "schedules.tick_interval: must be at most 3600 seconds, that is 1h (give "),
        ("tick_interval = 1.5", "schedules.tick_interval: must be a whole number of seconds"),
    ],
    ids=["words", "too-short", "too-short-with-unit", "too-long", "fraction"],
)  # fmt: skip
def test_a_refused_duration_names_the_key_and_the_unit(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, f"[schedules]\n{text}\n"), {})
    assert expected in str(err.value)


def test_every_duration_key_has_an_upper_bound():
    def bounded(field):
        items = getattr(field.annotation, "__args__", ())  # tuple[BackoffDelay, ...]
        metadata = [*field.metadata, *(m for a in items for m in getattr(a, "__metadata__", ()))]
        metadata += [c for m in metadata for c in getattr(m, "metadata", ())]  # Field(le=...)
        return any(hasattr(m, "le") or hasattr(m, "lt") for m in metadata)

    durations = [k for k, _ in fields_of(Config) if any(w in k for w in DURATION_WORDS)]
    assert [k for k, f in fields_of(Config) if k in durations and not bounded(f)] == []


FORMS = '(give seconds or a string with a unit: 300, "90s", "5m", "1h", "2d" or "1h30m")'


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[offload.retry]\nbackoff = [60, inf]",
         f"offload.retry.backoff.1: must be a finite number of seconds {FORMS}"),
        ("[server]\ndrain_timeout = inf",
         f"server.drain_timeout: must be a finite number of seconds {FORMS}"),
        ("[server]\ndrain_timeout = nan",
         f"server.drain_timeout: must be a finite number of seconds {FORMS}"),
        (f"[schedules]\nsync_interval = '{'9' * 400}s'",
         f"schedules.sync_interval: must be a finite number of seconds {FORMS}"),
        ("[schedules]\nsync_interval = '100000000d'",
         f"schedules.sync_interval: must be at most 604800 seconds, that is 7d {FORMS}"),
        ("[offload.retry]\nbackoff = ['8d']",
         f"offload.retry.backoff.0: must be at most 604800 seconds, that is 7d {FORMS}"),
        ("[server]\ndrain_timeout = '2h'",
         f"server.drain_timeout: must be at most 3600 seconds, that is 1h {FORMS}"),
        ("[security]\ncallback_max_skew = '2d'",
         f"security.callback_max_skew: must be at most 86400 seconds, that is 1d {FORMS}"),
        ("[schedules]\nsync_interval = '5M'",
         "schedules.sync_interval: not a duration: units are lowercase: s (seconds), "
         'm (minutes), h (hours) or d (days); "M" could be months or minutes: write "m" '
         "for minutes"),
        ("[schedules]\nsync_interval = '1H'",
         "schedules.sync_interval: not a duration: units are lowercase: s (seconds), "
         "m (minutes), h (hours) or d (days)"),
        ("[offload.retry]\nbackoff = '5m'",
         'offload.retry.backoff: give a list of delays, one per retry: backoff = ["30s", "5m"]'),
        ("[offload.retry]\nbackoff = 60",
         'offload.retry.backoff: give a list of delays, one per retry: backoff = ["30s", "5m"]'),
    ],
    ids=["backoff-inf", "drain-inf", "drain-nan", "overflowing-digits", "100000000d",
         "backoff-8d", "drain-2h", "skew-2d", "uppercase-M", "uppercase-H", "backoff-scalar",
         "backoff-number"],
)  # fmt: skip
def test_a_duration_must_be_finite_bounded_lowercase_and_backoff_a_list(tmp_path, text, expected):
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text + "\n"), {})
    assert str(err.value) == f"{tmp_path / 'config.toml'}: {expected}"


def test_a_duration_at_its_limit_is_taken(tmp_path):
    config = load(write(tmp_path, (
        "[server]\ndrain_timeout = '1h'\n"
        "[offload.retry]\nbackoff = ['0.5s', '7d']\n"
        "[schedules]\nsync_interval = '7d'\n"
    )), {})  # fmt: skip
    assert config.server.drain_timeout == 3600 and config.offload.retry.backoff == (0.5, 604_800)
    assert config.schedules.sync_interval == 604_800


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
        ("[[companies]]\nid = 3\nfrom = 'Acme training'\n", "companies.0.from: must be an address"),
        (
            '[[companies]]\nid = 3\nfrom = "a@acme.example\\nBcc: x@evil.example"\n',
            "companies.0.from: must be an address",
        ),
    ],
    ids=[
        "typo",
        "unknown",
        "company",
        "type",
        "missing",
        "choice",
        "timezone",
        "sender",
        "header-injection",
    ],  # fmt: skip
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


def test_dashboard_needs_the_encryption_key_and_a_service_shortname(tmp_path):
    with pytest.raises(ConfigError, match="dashboard.enabled: needs security.encryption_key"):
        load(write(tmp_path, "[dashboard]\nenabled = true\n"), {})
    with pytest.raises(ConfigError, match="dashboard.moodle_service: must be an external"):
        load(write(tmp_path, "[dashboard]\nmoodle_service = 'a b'\n"), {})
    key = Fernet.generate_key().decode()
    text = f"[security]\nencryption_key = '{key}'\n[dashboard]\nenabled = true\n"
    dashboard = load(write(tmp_path, text), {}).dashboard
    assert (dashboard.idle_timeout, dashboard.absolute_timeout) == (1800, 43200)
    assert (dashboard.login_max_failures, dashboard.login_window) == (5, 900)


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


def test_a_company_sender_is_taken_with_a_display_name(tmp_path):
    path = write(tmp_path, "[[companies]]\nid = 3\nfrom = 'Acme Training <t@acme.example>'\n")
    assert load(path, {}).companies[0].from_ == "Acme Training <t@acme.example>"


def test_logging_takes_text_or_json_and_names_a_bad_level():
    logs = Config.model_validate({"logging": {"format": "json", "level": "debug"}}).logging
    assert (logs.format, logs.level) == ("json", "DEBUG")
    with pytest.raises(ValidationError) as caught:
        Config.model_validate({"logging": {"format": "xml"}})
    assert "logging.format" in str(caught.value)
