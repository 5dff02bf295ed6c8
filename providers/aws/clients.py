"""boto3 clients for the sidecar's side of AWS, built one way (timeouts, retries, endpoint)."""

from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from providers.base import ProviderError, ProviderUnavailable

#: error codes that mean "not now": retried (besides HTTP 5xx and connection errors)
TRANSIENT_CODES = frozenset({
    "TooManyRequestsException", "Throttling", "ThrottlingException", "LimitExceededException",
    "SlowDown", "RequestLimitExceeded", "RequestThrottled", "ServiceUnavailable",
    "InternalError", "InternalFailure", "RequestTimeout", "RequestTimeoutException",
    "KMS.ThrottlingException",
})  # fmt: skip


@dataclass(frozen=True)
class Endpoint:
    """Where the AWS APIs are: a region, and an endpoint URL for testing (moto)."""

    region: str
    endpoint_url: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5


def client(service: str, endpoint: Endpoint, *, read_timeout: float | None = None) -> Any:
    """A boto3 client with botocore's standard retries (throttling, 5xx, connection errors)."""
    config = Config(
        region_name=endpoint.region,
        connect_timeout=endpoint.connect_timeout,
        read_timeout=read_timeout or endpoint.read_timeout,
        retries={"mode": "standard", "total_max_attempts": endpoint.max_attempts},
        # presigned links in SigV4 (X-Amz-Expires), the only kind every region accepts
        signature_version="s3v4" if service == "s3" else None,
    )
    return boto3.session.Session().client(
        service, endpoint_url=endpoint.endpoint_url, config=config
    )


def error_parts(exc: ClientError) -> tuple[str, int, str]:
    """(error code, HTTP status, AWS's message) of a boto3 ClientError."""
    err = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return err.get("Code", ""), status, err.get("Message", "")


def is_transient(code: str, status: int) -> bool:
    """Whether an AWS error is worth trying again later (throttling, 5xx)."""
    return code in TRANSIENT_CODES or status >= 500


def translate(exc: Exception, what: str) -> ProviderError:
    """A boto3 error as ProviderUnavailable (retry later) or ProviderError (fix something).

    `what` names the call and resource, e.g. "SQS ReceiveMessage on <url>".
    """
    if isinstance(exc, ClientError):
        code, status, text = error_parts(exc)
        message = f"{what}: {code}: {text}".rstrip(": ")
        if is_transient(code, status):
            return ProviderUnavailable(message)
        return ProviderError(message)
    if isinstance(exc, BotoCoreError):
        return ProviderUnavailable(f"{what}: {exc}")
    raise exc
