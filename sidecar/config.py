"""The configuration file (docs/configuration.md): TOML → one frozen, validated Config.

Secrets are resolved before validation: a value "env:NAME" reads the environment, a key
`<name>_file` reads a file (relative paths from $CREDENTIALS_DIRECTORY, else beside the
config file). Secret values are pydantic SecretStr: redacted in repr and never echoed in
an error. Every error is one line naming the file and the dotted key. A duration is
seconds or a string with units ("90s", "5m", "1h", "2d", "1h30m"): the `Seconds` types;
every duration key has an upper bound (`le=`), so nothing later meets an infinite or
out-of-range time.
"""

import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Mapping
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from sidecar.errors import ConfigError

DEFAULT_PATHS = (Path("/etc/moodle-offload/config.toml"), Path("config.toml"))


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("STATE_DIRECTORY", "/var/lib/moodle-offload").split(":")[0])


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_WITH_UNITS = re.compile(rf"(?:{_NUMBER}[smhd])+")
_FORMS = 'seconds or a string with a unit: 300, "90s", "5m", "1h", "2d" or "1h30m"'
_LOWERCASE = "units are lowercase: s (seconds), m (minutes), h (hours) or d (days)"
_BOUNDS = {"greater_than_equal": ("at least", "ge"), "less_than_equal": ("at most", "le"),
           "greater_than": ("more than", "gt"), "less_than": ("less than", "lt")}  # fmt: skip


def _seconds(text: str) -> float:
    """ "300", "90s", "5m", "1h30m", "2d" as seconds; ValueError for anything else."""
    text = re.sub(r"\s+", "", text)
    if re.fullmatch(rf"(?:{_NUMBER}[smhdSMHD])+", text) and not text.islower():
        months = '; "M" could be months or minutes: write "m" for minutes' if "M" in text else ""
        raise ValueError(f"not a duration: {_LOWERCASE}{months}")
    if re.fullmatch(_NUMBER, text):
        return float(text)
    if _WITH_UNITS.fullmatch(text):
        return sum(float(n) * _UNITS[u] for n, u in re.findall(rf"({_NUMBER})([smhd])", text))
    raise ValueError(f"not a duration: give {_FORMS}")


def _in_units(seconds: float) -> str:
    """3600 → "1h": the largest unit that divides `seconds`."""
    for unit, size in sorted(_UNITS.items(), key=lambda u: -u[1]):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:g}s"


def _duration(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """The one validator of every duration key: seconds or a string with units; a refused
    value's error names the unit and the forms taken (never echoes the value)."""
    if isinstance(value, str):
        value = _seconds(value)
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a duration: give {_FORMS}")
    if not math.isfinite(value):  # TOML's inf and nan, or a string of 400 digits
        raise ValueError(f"must be a finite number of seconds (give {_FORMS})")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        return handler(value)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        if err["type"] in _BOUNDS:
            words, name = _BOUNDS[err["type"]]
            limit = float(err["ctx"][name])
            limit_text = f"{limit:.0f}" if limit.is_integer() else f"{limit}"
            if limit >= 60:
                limit_text += f" seconds, that is {_in_units(limit)}"
            else:
                limit_text += " seconds"
            raise ValueError(f"must be {words} {limit_text} (give {_FORMS})") from None
        raise ValueError(f"must be a whole number of seconds (give {_FORMS})") from None


#: A duration in whole seconds; the config also takes "90s", "5m", "1h", "2d", "1h30m".
Seconds = Annotated[int, WrapValidator(_duration)]
#: A duration in seconds that may have a fraction ("1.5", "0.5s").
FractionalSeconds = Annotated[float, WrapValidator(_duration)]
#: One delay of `offload.retry.backoff`: 0 to 7 days.
BackoffDelay = Annotated[float, Field(ge=0, le=604_800), WrapValidator(_duration)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PasswordPolicyConfig(Section):
    """The site's password policy (Site administration > Security > Site security settings).
    No web-service function exposes it: the defaults are Moodle's."""

    min_length: int = Field(8, ge=1, le=100)
    digits: int = Field(1, ge=0, le=20)
    lower: int = Field(1, ge=0, le=20)
    upper: int = Field(1, ge=0, le=20)
    nonalphanum: int = Field(1, ge=0, le=20)
    max_consecutive_identical: int = Field(0, ge=0, le=100)


class MoodleConfig(Section):
    url: str
    token: SecretStr
    timeout: FractionalSeconds = Field(30.0, gt=0, le=3600)
    max_concurrency: int = Field(4, ge=1, le=64)
    verify_tls: bool = True
    companion_prefix: str = "local_manireports"
    page_size: int = Field(1000, ge=1, le=50000)
    max_input_vars: int = Field(1000, ge=10)
    retry_attempts: int = Field(4, ge=1, le=20)
    password_policy: PasswordPolicyConfig = PasswordPolicyConfig()

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http://)")
        return v.rstrip("/")


class DatabaseConfig(Section):
    url: str = Field(default_factory=lambda: f"sqlite:///{state_dir() / 'offload.db'}")


class ServerConfig(Section):
    listen: str = "127.0.0.1:8765"
    public_url: str = ""
    callback_max_bytes: int = Field(1_048_576, ge=1024)
    drain_timeout: FractionalSeconds = Field(20.0, gt=0, le=3600)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8765 or [::1]:8765")
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            if host != "localhost":
                raise ValueError("the host must be an IP address or localhost") from None
        return v

    @model_validator(mode="after")
    def _public(self):
        if not self.public_url:
            object.__setattr__(self, "public_url", f"http://{self.listen}")
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _a_fernet_key(v: SecretStr) -> SecretStr:
    from cryptography.fernet import Fernet

    try:
        Fernet(v.get_secret_value())
    except (ValueError, TypeError):
        raise ValueError(
            "is not a Fernet key (32 url-safe base64 bytes): make one with "
            "`moodle-offload keys new`"
        ) from None
    return v


class SecurityConfig(Section):
    callback_secrets: tuple[SecretStr, ...] = ()
    encryption_key: SecretStr | None = None
    # keys replaced by encryption_key, still read: what they sealed opens until
    # `keys rotate` re-encrypted it, and unsubscribe links they signed keep working
    previous_encryption_keys: tuple[SecretStr, ...] = ()
    callback_max_skew: Seconds = Field(300, ge=1, le=86_400)

    @field_validator("encryption_key")
    @classmethod
    def _fernet(cls, v: SecretStr | None) -> SecretStr | None:
        return None if v is None else _a_fernet_key(v)

    @field_validator("previous_encryption_keys")
    @classmethod
    def _fernets(cls, v: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for i, key in enumerate(v):
            try:
                _a_fernet_key(key)
            except ValueError as exc:
                raise ValueError(f"[{i}] {exc}") from None
        return v

    @model_validator(mode="after")
    def _previous_needs_current(self):
        if self.previous_encryption_keys and self.encryption_key is None:
            raise ValueError(
                "previous_encryption_keys: set encryption_key too (the new key, which seals; "
                "the previous keys are only read)"
            )
        return self

    def fernet_keys(self) -> list[str]:
        """The encryption key first (it seals), then the previous keys (read only)."""
        keys = [] if self.encryption_key is None else [self.encryption_key]
        return [k.get_secret_value() for k in (*keys, *self.previous_encryption_keys)]


class RetryConfig(Section):
    max_attempts: int = Field(3, ge=1, le=50)
    backoff: tuple[BackoffDelay, ...] = (60, 300, 900)

    @field_validator("backoff", mode="before")
    @classmethod
    def _a_list(cls, v):
        if not isinstance(v, list | tuple):
            raise ValueError('give a list of delays, one per retry: backoff = ["30s", "5m"]')
        return v

    @field_validator("backoff")
    @classmethod
    def _nonempty(cls, v):
        if not v:
            raise ValueError('give at least one delay: backoff = ["30s", "5m"]')
        return v


class OffloadConfig(Section):
    enabled: bool = False
    provider: Literal["aws", "cloudflare", "local"] = "local"
    threshold: int = Field(1000, ge=0)
    job_batch_size: int = Field(200, ge=1, le=10_000)
    fallback: Literal["queue_local", "fail"] = "queue_local"
    certificate_mode: Literal["cloud", "local", "cloud_if_enabled"] = "cloud_if_enabled"
    presigned_url_ttl: Seconds = Field(3600, ge=60, le=604_800)
    retry: RetryConfig = RetryConfig()


class AwsConfig(Section):
    region: str
    sqs_queue_url: str
    dlq_url: str | None = None
    results_queue_url: str | None = None
    s3_bucket: str
    ses_from: str
    ses_configuration_set: str | None = None
    ses_events_queue_url: str | None = None
    endpoint_url: str | None = None
    results_wait_seconds: Seconds = Field(10, ge=0, le=20)
    dlq_poll_interval: Seconds = Field(60, ge=1, le=86_400)


class CloudflareConfig(Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    worker_url: str | None = None  # the Worker's base URL: batches go in by its /enqueue
    auth_token: SecretStr | None = None  # API token: Queues REST API and pull consumer
    account_id: str | None = None
    queue_id: str | None = None  # the jobs queue (REST API mode)
    results_queue_id: str | None = None  # the Worker reports there (REPORT_MODE = "queue")
    dlq_id: str | None = None  # the jobs queue's dead-letter queue, read by pull
    r2_bucket: str | None = None
    r2_endpoint: str | None = None
    r2_access_key_id: str | None = None
    r2_secret_access_key: SecretStr | None = None
    from_: str | None = Field(None, alias="from")  # default providers.local.from
    api_base: str = "https://api.cloudflare.com/client/v4"  # for testing
    results_poll_interval: Seconds = Field(5, ge=1, le=3600)
    dlq_poll_interval: Seconds = Field(60, ge=1, le=86_400)

    @field_validator("worker_url", "r2_endpoint", "api_base")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError("must be an http(s):// URL")
        return v.rstrip("/") if v else v

    @field_validator("from_")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return _sender_or_none(v)

    @model_validator(mode="after")
    def _a_way_in(self):
        if not self.worker_url and not (self.account_id and self.queue_id and self.auth_token):
            raise ValueError(
                "give worker_url (batches go in through the Worker's /enqueue), or "
                "account_id, queue_id and auth_token (the Queues REST API)"
            )
        pulls = self.results_queue_id or self.dlq_id
        if pulls and not (self.account_id and self.auth_token):
            raise ValueError("results_queue_id and dlq_id are read with the Queues pull API: "
                             "set account_id and auth_token too")  # fmt: skip
        r2 = [self.r2_bucket, self.r2_endpoint, self.r2_access_key_id, self.r2_secret_access_key]
        if any(r2) and not all(r2):
            raise ValueError("certificates in R2 need r2_bucket, r2_endpoint, "
                             "r2_access_key_id and r2_secret_access_key together")  # fmt: skip
        return self


def _sender_or_none(value: str | None) -> str | None:
    """A `from` key's value: None, or one address with an optional display name."""
    if value is not None and not _is_sender(value):
        raise ValueError("must be an address, e.g. 'Acme Training <training@acme.example>'")
    return value


def _is_sender(value: str) -> bool:
    """A From header value: one address, optionally with a display name, on one line."""
    if "\r" in value or "\n" in value:
        return False
    _, address = parseaddr(value)
    local, at, domain = address.rpartition("@")
    return bool(at and local and "." in domain and " " not in address)


class LocalConfig(Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(25, ge=1, le=65535)
    smtp_security: Literal["starttls", "tls", "none"] = "starttls"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    from_: str = Field("", alias="from")
    rate_per_second: float = Field(0.0, ge=0)
    certificate_dir: Path = Field(default_factory=lambda: state_dir() / "certificates")
    maildir: Path | None = None
    timeout: FractionalSeconds = Field(30.0, gt=0, le=3600)

    @field_validator("from_")
    @classmethod
    def _address(cls, v: str) -> str:
        if v and "@" not in v:
            raise ValueError("must be an address, e.g. 'Academy <noreply@example.org>'")
        return v


class ProvidersConfig(Section):
    aws: AwsConfig | None = None
    cloudflare: CloudflareConfig | None = None
    local: LocalConfig = LocalConfig()


class CompanyConfig(Section):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: int
    enabled: bool = True
    provider: Literal["aws", "cloudflare", "local"] | None = None
    threshold: int | None = Field(None, ge=0)
    # the sender of this company's mail (every job of the company); default providers.local.from
    from_: str | None = Field(None, alias="from")

    @field_validator("from_")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return _sender_or_none(v)


class SchedulesConfig(Section):
    source: Literal["moodle", "file", "both"] = "moodle"
    sync_interval: Seconds = Field(300, ge=10, le=604_800)
    timezone: str = "UTC"
    file: Path | None = None
    catch_up: Literal["run_once", "skip"] = "run_once"
    tick_interval: Seconds = Field(30, ge=1, le=3600)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (e.g. Europe/London)") from None
        return v


class TemplatesConfig(Section):
    dir: Path | None = None


class UnsubscribeConfig(Section):
    enabled: bool = True


class DashboardConfig(Section):
    enabled: bool = False
    moodle_service: str = "moodle_mobile_app"
    idle_timeout: Seconds = Field(1800, ge=60, le=604_800)
    absolute_timeout: Seconds = Field(43_200, ge=300, le=2_592_000)
    login_max_failures: int = Field(5, ge=1, le=1000)
    login_window: Seconds = Field(900, ge=60, le=86_400)
    # Moodle usernames let in as IOMAD company managers (their companies come from IOMAD)
    company_managers: tuple[str, ...] = ()
    health_interval: Seconds = Field(30, ge=1, le=3600)
    health_timeout: FractionalSeconds = Field(5.0, gt=0, le=60)
    stuck_after: Seconds = Field(3600, ge=60, le=604_800)

    @field_validator("company_managers")
    @classmethod
    def _usernames(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for name in v:
            if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,100}", name):
                raise ValueError(f"{name!r} is not a Moodle username (letters, digits and _ . @ -)")
            out.append(name.lower())  # Moodle stores usernames in lower case
        return tuple(out)

    @field_validator("moodle_service")
    @classmethod
    def _shortname(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
            raise ValueError("must be an external service's shortname, e.g. moodle_mobile_app")
        return v


class LoggingConfig(Section):
    # one line per event on stderr (journald): "text", or "json" for a log shipper
    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v):
        return v.upper() if isinstance(v, str) else v


class MetricsConfig(Section):
    # when set, GET /metrics needs `Authorization: Bearer <token>`
    token: SecretStr | None = None


class RetentionConfig(Section):
    # finished jobs older than this lose their recipients' personal data (counts stay)
    recipient_days: int = Field(180, ge=1, le=36_500)
    # stored certificate PDFs older than this are deleted (None: kept)
    certificate_days: int | None = Field(None, ge=1, le=36_500)


class AlertsConfig(Section):
    # who gets the stuck-job alerts and the daily report (none: neither is sent)
    admin_emails: tuple[str, ...] = ()
    # "HH:MM" in [schedules] timezone; None: no daily report
    daily_report_at: str | None = None

    @field_validator("admin_emails")
    @classmethod
    def _emails(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from sidecar.csvinput import validate_email

        out = []
        for address in v:
            try:
                out.append(validate_email(address))
            except ValueError as exc:
                raise ValueError(f"{address!r} is not an email address: {exc}") from None
        return tuple(dict.fromkeys(out))

    @field_validator("daily_report_at")
    @classmethod
    def _hhmm(cls, v: str | None) -> str | None:
        if v is None:
            return v
        m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", v.strip())
        if not m:
            raise ValueError(f'{v!r} is not a time of day: give HH:MM, e.g. "07:30"')
        return f"{int(m[1]):02d}:{m[2]}"


class Config(Section):
    moodle: MoodleConfig | None = None
    database: DatabaseConfig = DatabaseConfig()
    server: ServerConfig = ServerConfig()
    security: SecurityConfig = SecurityConfig()
    offload: OffloadConfig = OffloadConfig()
    providers: ProvidersConfig = ProvidersConfig()
    companies: tuple[CompanyConfig, ...] = ()
    schedules: SchedulesConfig = SchedulesConfig()
    templates: TemplatesConfig = TemplatesConfig()
    unsubscribe: UnsubscribeConfig = UnsubscribeConfig()
    dashboard: DashboardConfig = DashboardConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    retention: RetentionConfig = RetentionConfig()
    alerts: AlertsConfig = AlertsConfig()

    @model_validator(mode="after")
    def _cloud_needs(self):
        o = self.offload
        if o.enabled and o.provider != "local":
            if getattr(self.providers, o.provider) is None:
                raise ValueError(
                    f"providers.{o.provider}: required when offload.provider = {o.provider!r}"
                )
            if not self.security.callback_secrets:
                raise ValueError(
                    "security.callback_secrets: at least one secret is required for cloud offload"
                )
        return self

    @model_validator(mode="after")
    def _dashboard_needs(self):
        if self.dashboard.enabled and self.security.encryption_key is None:
            raise ValueError(
                "dashboard.enabled: needs security.encryption_key (it signs the sign-in cookies)"
            )
        return self

    def sender_for(self, companyid: int | None) -> tuple[str, str]:
        """The From of a job of `companyid` (0/None: site-wide) and the key it comes from:
        the company's `[[companies]] from` when it has one, else `providers.local.from`."""
        own = next((c for c in self.companies if companyid and c.id == companyid), None)
        if own is not None and own.from_:
            return own.from_, f"[[companies]] id = {companyid}: from"
        return self.providers.local.from_, "providers.local.from"

    def secret_values(self) -> list[str]:
        """Every resolved secret (for the log redaction filter)."""
        out: list[str] = []

        def walk(obj: Any) -> None:
            if isinstance(obj, SecretStr):
                out.append(obj.get_secret_value())
            elif isinstance(obj, BaseModel):
                for name in type(obj).model_fields:
                    walk(getattr(obj, name))
            elif isinstance(obj, tuple | list):
                for item in obj:
                    walk(item)

        walk(self)
        return [s for s in out if s]


# Dotted paths of secret keys; `*` is any list index.
SECRET_KEYS = (
    "moodle.token",
    "security.callback_secrets",
    "security.encryption_key",
    "security.previous_encryption_keys",
    "providers.local.smtp_password",
    "providers.cloudflare.auth_token",
    "providers.cloudflare.r2_secret_access_key",
    "metrics.token",
)


def default_path(env: Mapping[str, str]) -> Path:
    if env.get("MOODLE_OFFLOAD_CONFIG"):
        return Path(env["MOODLE_OFFLOAD_CONFIG"])
    for path in DEFAULT_PATHS:
        if path.exists():
            return path
    return DEFAULT_PATHS[-1]


def load(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Read, resolve secrets, validate. Raises ConfigError (one line: file, key, what to do)."""
    env = os.environ if env is None else env
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file: copy config.example.toml there, or pass -c PATH"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    resolve_secrets(raw, path, env)
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc, raw)}") from None
    except ValueError as exc:  # raised by model validators outside pydantic's wrapping
        raise ConfigError(f"{path}: {exc}") from None


def describe(exc: ValidationError, raw: Mapping) -> str:
    """One line for the first error, built from location and message only (never the input)."""
    errors = exc.errors(include_input=False, include_url=False)
    # A typo shows as an unknown key plus a missing one: name the typo first.
    errors.sort(key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        msg = "unknown key" + _hint(loc, raw)
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "value_error" and not loc:
        msg = str(err["msg"]).removeprefix("Value error, ")
        return msg + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{key}: {msg}{more}"


def _hint(loc: list[str], raw: Mapping) -> str:
    model: Any = Config
    for part in loc[:-1]:
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return ""
        model = model_of(field.annotation)
        if model is None:
            return ""
    names = [f.alias or n for n, f in model.model_fields.items()]
    close = difflib.get_close_matches(loc[-1], names, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(names)})"


def model_of(annotation: Any):
    """The config section model an annotation holds (`Section`, `Section | None`,
    `list[Section]`...), or None for a plain value."""
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = model_of(arg)
        if found is not None:
            return found
    return None


def resolve_secrets(raw: dict, path: Path, env: Mapping[str, str]) -> None:
    """Replace env:NAME values and *_file keys of secret keys by the secret, in place."""
    for dotted in SECRET_KEYS:
        *parents, name = dotted.split(".")
        node: Any = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        file_key = f"{name}_file"
        if file_key in node:
            if name in node:
                raise ConfigError(f"{path}: {dotted}: give either {name} or {file_key}, not both")
            source = node.pop(file_key)
            if not isinstance(source, str):
                raise ConfigError(f"{path}: {dotted}_file: must be a path string")
            text = _read_secret(path, f"{dotted}_file", source, env)
            if dotted in ("security.callback_secrets", "security.previous_encryption_keys"):
                node[name] = [line.strip() for line in text.splitlines() if line.strip()]
            else:
                node[name] = text.strip()
        if name not in node:
            continue
        value = node[name]
        if isinstance(value, list):
            node[name] = [_from_env(path, f"{dotted}[{i}]", v, env) for i, v in enumerate(value)]
        else:
            node[name] = _from_env(path, dotted, value, env)


def _from_env(path: Path, key: str, value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("env:"):
        var = value[4:]
        if var not in env:
            raise ConfigError(f"{path}: {key}: environment variable {var} is not set")
        return env[var]
    return value


def _read_secret(path: Path, key: str, source: str, env: Mapping[str, str]) -> str:
    file = Path(source)
    if not file.is_absolute():
        base = env.get("CREDENTIALS_DIRECTORY")
        file = (Path(base) if base else path.parent) / file
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {key}: cannot read {file}: {exc.strerror}") from None
