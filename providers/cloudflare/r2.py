"""R2, the certificates' bucket on Cloudflare, through its S3-compatible API.

The Worker's R2 binding cannot presign a link, so the sidecar stores each PDF and signs
the download links itself: boto3 against `https://<account>.r2.cloudflarestorage.com`
with an R2 API token's key pair and `region_name="auto"` (R2 requires a region and
ignores it). Everything else is S3's: the same store as the AWS route's.
"""

from typing import Any

import boto3
from botocore.config import Config

from providers.aws.account import CertificateStore


def r2_client(endpoint: str, key_id: str, secret: str, *, attempts: int = 5) -> Any:
    # checksums only where S3 requires them: R2 does not take the aws-chunked uploads with
    # trailing checksums that boto3 sends by default since 1.36 (Cloudflare's R2 docs)
    config = Config(
        region_name="auto", connect_timeout=5.0, read_timeout=30.0, signature_version="s3v4",
        retries={"mode": "standard", "total_max_attempts": attempts},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )  # fmt: skip
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
        config=config,
    )  # fmt: skip


class R2Store(CertificateStore):
    """put, presign, open and check on an R2 bucket."""

    def __init__(self, bucket: str, endpoint: str, key_id: str, secret: str):
        self.bucket = bucket
        self.endpoint = endpoint
        self.client = r2_client(endpoint, key_id, secret)
