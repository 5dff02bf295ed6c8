"""AWS offload, cloud side: the Lambda function that delivers batch messages from SQS.

The Lambda handler setting is `providers.aws.worker.handler.handler` (not re-exported
here, so that `providers.aws.worker.handler` stays the module). See `handler.py` for the
environment and the message keys it reads, `idempotency.py` for the DynamoDB records.
"""

from providers.aws.worker.handler import UNKNOWN_OUTCOME, Worker
from providers.aws.worker.settings import WorkerConfigError, WorkerSettings

__all__ = ["UNKNOWN_OUTCOME", "Worker", "WorkerConfigError", "WorkerSettings"]
