"""AWS offload, sidecar side: batch messages into SQS (boto3 lives here and only here)."""

from providers.aws.connector import (
    AwsSettings,
    BatchOutcome,
    MessageOverLimit,
    QueueInfo,
    SqsSubmitter,
    SubmitInterrupted,
)

__all__ = [
    "AwsSettings",
    "BatchOutcome",
    "MessageOverLimit",
    "QueueInfo",
    "SqsSubmitter",
    "SubmitInterrupted",
]
