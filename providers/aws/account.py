"""What the sidecar asks of SES and S3: the send quota, the sender's verification, links."""

import logging
from dataclasses import dataclass
from typing import BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from providers.aws.clients import Endpoint, client, error_parts, translate

log = logging.getLogger(__name__)

#: never plan more than this share of the account's SES quota and rate
QUOTA_SHARE = 0.95
#: S3 presigned URLs live 7 days at most
MAX_PRESIGN_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class SendQuota:
    max_24h: float
    max_rate: float  # emails a second
    sent_24h: float

    @property
    def unlimited(self) -> bool:
        """SES reports -1 as the daily quota of an account without one."""
        return self.max_24h < 0

    @property
    def used_share(self) -> float | None:
        """SentLast24Hours as a share of Max24HourSend (None: no daily limit)."""
        if self.unlimited:
            return None
        return self.sent_24h / self.max_24h if self.max_24h > 0 else 1.0

    @property
    def plan_day(self) -> int | None:
        """The most the sidecar plans in any 24 h: 95% of the daily quota (None: no limit)."""
        return None if self.unlimited else int(self.max_24h * QUOTA_SHARE)

    @property
    def plan_rate(self) -> float:
        """Emails a second the sidecar may plan: 95% of the account's rate."""
        return self.max_rate * QUOTA_SHARE

    def plan_remaining(self, in_flight: int = 0) -> int | None:
        """Emails the sidecar may still hand over today: 95% of the daily quota, less what
        SES sent in the last 24 h and what is queued but not yet sent (None: no limit)."""
        if self.unlimited:
            return None
        return max(int(self.max_24h * QUOTA_SHARE - self.sent_24h) - in_flight, 0)

    def describe(self) -> str:
        day = (
            "without a daily limit"
            if self.unlimited
            else f"{self.max_24h:,.0f} emails a day ({self.sent_24h:,.0f} sent in the last 24 h)"
        )
        return f"SES quota {day}, {self.max_rate:g} a second; the sidecar plans at most 95% of both"


class SesAccount:
    """SES (v1 API: GetSendQuota, identity verification) for pacing and `check`."""

    def __init__(self, endpoint: Endpoint):
        self.client = client("ses", endpoint)

    def close(self) -> None:
        self.client.close()

    def quota(self) -> SendQuota:
        """The account's quota in this region; raises ProviderUnavailable / ProviderError."""
        try:
            q = self.client.get_send_quota()
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, "SES GetSendQuota") from None
        return SendQuota(
            float(q.get("Max24HourSend", 0)),
            float(q.get("MaxSendRate", 0)),
            float(q.get("SentLast24Hours", 0)),
        )

    def sender_verified(self, address: str) -> tuple[bool, str]:
        """Whether SES may send from `address`: the address or its domain is verified.

        Returns (ok, what was found); raises ProviderError when SES cannot be asked.
        """
        addr = address.rsplit("<", 1)[-1].rstrip(">").strip()
        domain = addr.rpartition("@")[2]
        try:
            attrs = self.client.get_identity_verification_attributes(Identities=[addr, domain])[
                "VerificationAttributes"
            ]
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, "SES GetIdentityVerificationAttributes") from None
        for identity in (addr, domain):
            if attrs.get(identity, {}).get("VerificationStatus") == "Success":
                return True, f"identity {identity} is verified"
        states = ", ".join(
            f"{i}: {attrs.get(i, {}).get('VerificationStatus', 'not found')}"
            for i in (addr, domain)
        )
        return False, f"{addr} is not verified in SES, nor is its domain ({states})"


class CertificateStore:
    """The certificates bucket: presigned download links, reading an object (a course's
    ZIP), and `check`'s reachability test."""

    def __init__(self, bucket: str, endpoint: Endpoint):
        self.bucket = bucket
        self.client = client("s3", endpoint)

    def close(self) -> None:
        self.client.close()

    def presign(self, key: str, ttl: int, filename: str | None = None) -> str:
        """A GET URL for `key` valid `ttl` seconds (capped at S3's 7 days); no request made."""
        params = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f'inline; filename="{filename}"'
        return self.client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=min(int(ttl), MAX_PRESIGN_SECONDS)
        )

    def open(self, key: str) -> BinaryIO | None:
        """A stream of the object's bytes (read it in chunks, then close it); None when the
        bucket has no such key. Raises ProviderError (ProviderUnavailable: retry) else."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if error_parts(exc)[0] in ("NoSuchKey", "404"):
                return None
            raise translate(exc, f"S3 GetObject {self.bucket}/{key}") from None
        except BotoCoreError as exc:
            raise translate(exc, f"S3 GetObject {self.bucket}/{key}") from None

    def put(self, key: str, data: bytes, content_type: str = "application/pdf") -> None:
        """Store `data` at `key` (replacing what is there); raises ProviderError
        (ProviderUnavailable: retry)."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                   ContentType=content_type)  # fmt: skip
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"PutObject {self.bucket}/{key}") from None

    def delete(self, key: str) -> bool:
        """Delete the object at `key`; False when the bucket had no such key. Idempotent.
        Raises ProviderError (ProviderUnavailable: retry)."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if error_parts(exc)[0] in ("NoSuchKey", "404", "NotFound"):
                return False
            raise translate(exc, f"S3 HeadObject {self.bucket}/{key}") from None
        except BotoCoreError as exc:
            raise translate(exc, f"S3 HeadObject {self.bucket}/{key}") from None
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"S3 DeleteObject {self.bucket}/{key}") from None
        return True

    def check(self) -> str:
        """Raises ProviderError when the bucket cannot be reached with these credentials."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"S3 HeadBucket {self.bucket}") from None
        return f"bucket {self.bucket} reachable"
