"""The Lambda worker's settings, read from its environment variables."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from providers.base import ProviderError

SSE_MODES = ("AES256", "aws:kms")
#: delivery records expire (DynamoDB TTL) this long after their last write
RECORD_TTL_SECONDS = 14 * 24 * 3600


class WorkerConfigError(ProviderError):
    """An environment variable of the Lambda function is missing or invalid."""


@dataclass(frozen=True)
class WorkerSettings:
    """What the worker needs besides its boto3 clients; `from_env` reads it."""

    idempotency_table: str
    callback_secret_arn: str | None = None
    #: the HMAC secret itself, when no Secrets Manager ARN is given (never logged)
    callback_secret: str | None = field(default=None, repr=False)
    ses_configuration_set: str | None = None
    cert_sse: str = "AES256"
    cert_kms_key_id: str | None = None
    #: in-invocation retries of a throttled SES/S3 call, after botocore's own
    ses_retries: int = 4
    #: no new recipient is started with less time than this left in the invocation
    min_remaining_ms: int = 30_000
    record_ttl_seconds: int = RECORD_TTL_SECONDS
    callback_timeout: float = 10.0
    backoff_base: float = 0.25
    backoff_max: float = 8.0

    def __post_init__(self) -> None:
        if not self.idempotency_table:
            raise WorkerConfigError(
                "OFFLOAD_IDEMPOTENCY_TABLE is not set: name the DynamoDB table of delivery records"
            )
        if not (self.callback_secret_arn or self.callback_secret):
            raise WorkerConfigError(
                "no callback secret: set OFFLOAD_CALLBACK_SECRET_ARN (a Secrets Manager secret) "
                "or OFFLOAD_CALLBACK_SECRET"
            )
        if self.cert_sse not in SSE_MODES:
            raise WorkerConfigError(
                f"OFFLOAD_CERT_SSE is {self.cert_sse!r}; expected one of {', '.join(SSE_MODES)}"
            )
        if self.cert_kms_key_id and self.cert_sse != "aws:kms":
            raise WorkerConfigError(
                "OFFLOAD_CERT_KMS_KEY_ID is set but OFFLOAD_CERT_SSE is not aws:kms; "
                "set OFFLOAD_CERT_SSE=aws:kms or remove the key id"
            )
        if self.ses_retries < 0:
            raise WorkerConfigError("OFFLOAD_SES_RETRIES must be 0 or more")
        if self.min_remaining_ms < 0:
            raise WorkerConfigError("OFFLOAD_MIN_REMAINING_MS must be 0 or more")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "WorkerSettings":
        """Settings from the OFFLOAD_* variables; raises WorkerConfigError naming the variable."""

        def text(name: str) -> str | None:
            return (env.get(name) or "").strip() or None

        return cls(
            idempotency_table=text("OFFLOAD_IDEMPOTENCY_TABLE") or "",
            callback_secret_arn=text("OFFLOAD_CALLBACK_SECRET_ARN"),
            # the secret is taken as given: surrounding spaces could be part of it
            callback_secret=env.get("OFFLOAD_CALLBACK_SECRET") or None,
            ses_configuration_set=text("OFFLOAD_SES_CONFIGURATION_SET"),
            cert_sse=text("OFFLOAD_CERT_SSE") or "AES256",
            cert_kms_key_id=text("OFFLOAD_CERT_KMS_KEY_ID"),
            ses_retries=_integer(env, "OFFLOAD_SES_RETRIES", 4),
            min_remaining_ms=_integer(env, "OFFLOAD_MIN_REMAINING_MS", 30_000),
        )


def _integer(env: Mapping[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise WorkerConfigError(f"{name} is {raw!r}; expected a whole number") from None
