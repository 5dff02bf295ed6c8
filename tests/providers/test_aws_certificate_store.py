"""The certificates bucket read back (moto, server mode): a course's ZIP takes cloud-rendered
PDFs from it one at a time; a missing object is told apart from a failure."""

import uuid
import zipfile
from datetime import datetime

import boto3
import pytest

from providers.aws.account import CertificateStore
from providers.aws.clients import Endpoint
from providers.base import ProviderError


@pytest.fixture
def store(moto):
    bucket = f"certs-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=moto, region_name="eu-west-1")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    s3.put_object(Bucket=bucket, Key="certificates/job/1.pdf", Body=b"%PDF-1.4 one")
    made = CertificateStore(bucket, Endpoint("eu-west-1", moto, max_attempts=1))
    yield made
    made.close()


def test_an_object_streams_and_a_missing_key_is_none(store):
    body = store.open("certificates/job/1.pdf")
    try:
        assert body.read(4) + body.read() == b"%PDF-1.4 one"
    finally:
        body.close()
    assert store.open("certificates/job/2.pdf") is None


def test_another_bucket_s_failure_is_an_error_not_a_missing_pdf(store, moto):
    gone = CertificateStore("no-such-bucket-here", Endpoint("eu-west-1", moto, max_attempts=1))
    with pytest.raises(ProviderError, match="S3 GetObject no-such-bucket-here/x.pdf"):
        gone.open("x.pdf")
    gone.close()


def test_a_course_zip_reads_s3_certificates_and_lists_a_missing_one(store, tmp_path):
    from sidecar import certzip

    at = datetime(2026, 12, 5)
    entries = [
        certzip.Entry("AAA", 1, "s3", "certificates/job/1.pdf", at, "L_F_2026-12-05_AAA.pdf"),
        certzip.Entry("BBB", 2, "s3", "certificates/job/2.pdf", at, "L_G_2026-12-05_BBB.pdf"),
    ]
    missing = certzip.write_file(entries, tmp_path / "c.zip",
                                 certzip.opener(tmp_path, {"s3": lambda: store}))  # fmt: skip
    assert [m.entry.code for m in missing] == ["BBB"]
    with zipfile.ZipFile(tmp_path / "c.zip") as zf:
        assert zf.namelist() == ["L_F_2026-12-05_AAA.pdf", "MISSING.txt"]
        assert zf.read("L_F_2026-12-05_AAA.pdf") == b"%PDF-1.4 one"
