"""The AWS stack (providers/aws/template.yaml), its deploy script and its docs.

Nothing here calls AWS. What each test checks:

- cfn-lint: no errors, no warnings, in the two regions docs/aws.md prices
  (`test_cfn_lint_finds_no_errors_or_warnings`).
- Job queue: SSE, 256 KiB+ messages, visibility >= 6 x the function timeout, the timeout
  covers one event batch at the assumed pace, redrive to the DLQ after a
  `MaxReceiveCount` parameter (default 5), DLQ kept 14 days; every queue encrypted.
- Worker: runtime, handler (and that the module exists), memory, environment wired to
  the stack's resources, event source with ReportBatchItemFailures and a bounded
  `MaxConcurrency` parameter, its own log group with retention.
- Certificate bucket: encryption, public access blocked, owner enforced, TLS-only
  policy, lifecycle (Standard-IA, expiry by parameter).
- Idempotency table (pk, on-demand, TTL on expires_at); the secret from a NoEcho
  parameter; SES bounce/complaint events -> SNS -> raw events queue that only the
  topic may send to.
- IAM: the worker role and the sidecar policy grant exactly the expected actions on
  exactly the expected resources (least privilege: a new action or resource fails).
- Alarms: job queue depth and age, DLQ not empty, Lambda errors and throttles, SES
  bounce and complaint rates, all to the alarm topic; the email subscription optional.
- Outputs: one per [providers.aws] key deploy.sh prints, each a field of the sidecar's
  AwsConfig, every required field covered, each named in docs/aws.md.
- deploy.sh: `bash -n`, shellcheck (when installed), --help, refuses the secret as an
  argument without echoing it, and its flags name real template parameters.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode import cfn_yaml

from sidecar.config import AwsConfig

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "providers" / "aws" / "template.yaml"
DEPLOY = ROOT / "providers" / "aws" / "deploy.sh"
DOCS = ROOT / "docs" / "aws.md"
LINT_REGIONS = ["us-east-1", "eu-west-1"]

# The pace docs/aws.md assumes, and the worker's reserve: it starts no recipient with
# less than 30 s left (OFFLOAD_MIN_REMAINING_MS); a message holds up to 200 recipients.
RECIPIENTS_PER_MESSAGE = 200
SECONDS_PER_EMAIL = 0.15
SECONDS_PER_CERTIFICATE = 0.05
WORKER_RESERVE_SECONDS = 30

SES_IDENTITY_ADDRESS = (
    "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${SenderEmail}"
)
SES_IDENTITY_DOMAIN = (
    "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${Domain}"
)
SES_CONFIGURATION_SET = (
    "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}"
    ":configuration-set/${ConfigurationSet}"
)
CERTIFICATE_OBJECTS = "${CertificateBucket.Arn}/${CertificatePrefix}*"


@pytest.fixture(scope="module")
def template():
    return cfn_yaml.loads(TEMPLATE.read_text(encoding="utf-8"))


def props(template, logical_id):
    return template["Resources"][logical_id]["Properties"]


def of_type(template, kind):
    return {k: r for k, r in template["Resources"].items() if r["Type"] == kind}


def describe(value):
    """A short name for a resource reference: Ref X -> X, GetAtt X.Y -> X.Y, Sub -> text."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return value["Ref"]
    if "Fn::GetAtt" in value:
        return ".".join(value["Fn::GetAtt"])
    if "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    raise AssertionError(f"unexpected resource reference {value!r}")


def as_list(value):
    return value if isinstance(value, list) else [value]


def grants(document):
    """{action: {resource, ...}} of an IAM policy document's Allow statements."""
    out: dict[str, set[str]] = {}
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow", statement
        assert "NotAction" not in statement and "NotResource" not in statement, statement
        for action in as_list(statement["Action"]):
            out.setdefault(action, set()).update(
                describe(r) for r in as_list(statement["Resource"])
            )
    return out


def deploy_output_keys():
    """The (config key, stack output) pairs deploy.sh prints under [providers.aws]."""
    return re.findall(r'\("([a-z0-9_]+)", "([A-Za-z0-9]+)"\)', DEPLOY.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- lint and syntax


def test_cfn_lint_finds_no_errors_or_warnings():
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=LINT_REGIONS))
    assert [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches] == []


def test_deploy_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(DEPLOY)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_deploy_script_passes_shellcheck():
    result = subprocess.run(["shellcheck", str(DEPLOY)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_deploy_script_help_exits_0_and_names_the_secret_sources():
    result = subprocess.run(["bash", str(DEPLOY), "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--callback-secret-file" in result.stdout and "CALLBACK_SECRET" in result.stdout


@pytest.mark.parametrize("args", [["--callback-secret", "{s}"], ["--callback-secret={s}"]])
def test_deploy_script_refuses_the_secret_as_an_argument_without_echoing_it(args):
    secret = "do-not-echo-0123456789abcdefghijklmnopqrstuv"
    argv = ["bash", str(DEPLOY), "--region", "eu-west-1", *[a.format(s=secret) for a in args]]
    result = subprocess.run(argv, capture_output=True, text=True)
    assert result.returncode == 1
    assert "--callback-secret-file" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_deploy_script_flags_name_template_parameters(template):
    given = set(re.findall(r"add_override (\w+) ", DEPLOY.read_text(encoding="utf-8")))
    assert given, "no add_override calls found in deploy.sh"
    assert given <= set(template["Parameters"])


# ---------------------------------------------------------------- job queue


def test_job_queue_is_encrypted_and_takes_at_least_256_kib_messages(template):
    queue = props(template, "JobQueue")
    assert queue.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue
    assert queue["MaximumMessageSize"] >= 262_144


def test_job_queue_visibility_is_at_least_six_function_timeouts(template):
    timeout = props(template, "WorkerFunction")["Timeout"]
    assert props(template, "JobQueue")["VisibilityTimeout"] >= 6 * timeout


def test_function_timeout_covers_one_event_batch_at_the_assumed_pace(template):
    messages = props(template, "WorkerEventSource")["BatchSize"]
    per_recipient = SECONDS_PER_EMAIL + SECONDS_PER_CERTIFICATE
    needed = messages * RECIPIENTS_PER_MESSAGE * per_recipient + WORKER_RESERVE_SECONDS
    assert props(template, "WorkerFunction")["Timeout"] >= needed


def test_job_queue_redrives_to_the_dlq_after_max_receive_count(template):
    redrive = props(template, "JobQueue")["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["JobDeadLetterQueue", "Arn"]}
    assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
    assert template["Parameters"]["MaxReceiveCount"]["Default"] == 5


def test_dlq_keeps_messages_14_days_and_longer_than_the_job_queue(template):
    dlq = props(template, "JobDeadLetterQueue")["MessageRetentionPeriod"]
    assert dlq == 14 * 24 * 3600
    assert dlq >= props(template, "JobQueue")["MessageRetentionPeriod"]


def test_every_queue_is_encrypted(template):
    queues = of_type(template, "AWS::SQS::Queue")
    assert set(queues) == {"JobQueue", "JobDeadLetterQueue", "ResultsQueue", "EventsQueue"}
    for name, queue in queues.items():
        p = queue["Properties"]
        assert p.get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in p, name


# ---------------------------------------------------------------- worker


def test_worker_runtime_handler_and_memory(template):
    fn = props(template, "WorkerFunction")
    assert fn["Runtime"] == "python3.12"
    assert fn["Handler"] == "providers.aws.worker.handler.handler"
    assert fn["MemorySize"] == 512
    assert fn["Architectures"] == ["x86_64"]  # deploy.sh builds manylinux2014_x86_64 wheels


def test_worker_handler_module_defines_the_handler(template):
    module, _, function = props(template, "WorkerFunction")["Handler"].rpartition(".")
    source = ROOT.joinpath(*module.split(".")).with_suffix(".py")
    assert source.is_file(), f"{source.relative_to(ROOT)} is missing"
    assert re.search(rf"^def {function}\(", source.read_text(encoding="utf-8"), re.M)


def test_worker_environment_points_at_the_stack_resources(template):
    env = props(template, "WorkerFunction")["Environment"]["Variables"]
    assert env["OFFLOAD_IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    assert env["OFFLOAD_CALLBACK_SECRET_ARN"] == {"Ref": "CallbackSecretStore"}
    assert env["OFFLOAD_SES_CONFIGURATION_SET"] == {"Ref": "ConfigurationSet"}
    sse = props(template, "CertificateBucket")["BucketEncryption"]
    default = sse["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert env["OFFLOAD_CERT_SSE"] == default["SSEAlgorithm"]


def test_event_source_reports_batch_item_failures_with_bounded_concurrency(template):
    esm = props(template, "WorkerEventSource")
    assert esm["EventSourceArn"] == {"Fn::GetAtt": ["JobQueue", "Arn"]}
    assert esm["FunctionName"] == {"Ref": "WorkerFunction"}
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert 1 <= esm["BatchSize"] <= 10
    assert esm["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "MaxConcurrency"}
    param = template["Parameters"]["MaxConcurrency"]
    assert param["MinValue"] == 2 and param["Default"] >= 2


def test_worker_logs_to_its_own_log_group_with_retention(template):
    assert props(template, "WorkerFunction")["LoggingConfig"]["LogGroup"] == {
        "Ref": "WorkerLogGroup"
    }
    assert props(template, "WorkerLogGroup")["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert template["Parameters"]["LogRetentionDays"]["Default"] > 0


# ---------------------------------------------------------------- storage and secret


def test_certificate_bucket_is_encrypted_private_and_owner_enforced(template):
    bucket = props(template, "CertificateBucket")
    rule = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    block = bucket["PublicAccessBlockConfiguration"]
    assert all(
        block[k] is True
        for k in (
            "BlockPublicAcls",
            "BlockPublicPolicy",
            "IgnorePublicAcls",
            "RestrictPublicBuckets",
        )
    )
    assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert template["Resources"]["CertificateBucket"]["DeletionPolicy"] == "Retain"


def test_certificate_bucket_policy_denies_requests_without_tls(template):
    policy = props(template, "CertificateBucketPolicy")
    assert policy["Bucket"] == {"Ref": "CertificateBucket"}
    deny = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
    assert len(deny) == 1
    assert deny[0]["Principal"] == "*" and deny[0]["Action"] == "s3:*"
    assert deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {describe(r) for r in deny[0]["Resource"]} == {
        "CertificateBucket.Arn",
        "${CertificateBucket.Arn}/*",
    }


def test_certificate_lifecycle_moves_to_standard_ia_and_expires_by_parameter(template):
    rules = props(template, "CertificateBucket")["LifecycleConfiguration"]["Rules"]
    plain = [r for r in rules if "Fn::If" not in r]
    transitions = [t for r in plain for t in r.get("Transitions", [])]
    assert {"StorageClass": "STANDARD_IA", "TransitionInDays": 30} in transitions
    (conditional,) = [r["Fn::If"] for r in rules if "Fn::If" in r]
    condition, expire, otherwise = conditional
    assert condition == "HasExpiry" and otherwise == {"Ref": "AWS::NoValue"}
    assert expire["ExpirationInDays"] == {"Ref": "CertificateExpiryDays"}
    assert template["Parameters"]["CertificateExpiryDays"]["Default"] == 0
    assert template["Conditions"]["HasExpiry"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "CertificateExpiryDays"}, "0"]}]
    }


def test_idempotency_table_is_on_demand_keyed_by_pk_with_ttl(template):
    table = props(template, "IdempotencyTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}


def test_callback_secret_is_stored_from_a_noecho_parameter(template):
    assert props(template, "CallbackSecretStore")["SecretString"] == {"Ref": "CallbackSecret"}
    param = template["Parameters"]["CallbackSecret"]
    assert param["NoEcho"] is True
    assert param["MinLength"] >= 32
    assert "Default" not in param


# ---------------------------------------------------------------- SES events


def test_ses_publishes_bounces_and_complaints_to_the_events_topic(template):
    dest = props(template, "ConfigurationSetEvents")
    assert dest["ConfigurationSetName"] == {"Ref": "ConfigurationSet"}
    event = dest["EventDestination"]
    assert event["Enabled"] is True
    assert event["SnsDestination"] == {"TopicARN": {"Ref": "SesEventsTopic"}}
    condition, with_delivery, without = event["MatchingEventTypes"]["Fn::If"]
    assert condition == "PublishDelivery"
    assert {"bounce", "complaint"} <= set(without) and "delivery" in with_delivery


def test_events_queue_gets_the_raw_ses_event_json(template):
    sub = props(template, "EventsQueueSubscription")
    assert sub["TopicArn"] == {"Ref": "SesEventsTopic"}
    assert sub["Protocol"] == "sqs"
    assert sub["Endpoint"] == {"Fn::GetAtt": ["EventsQueue", "Arn"]}
    assert sub["RawMessageDelivery"] is True


def test_events_queue_policy_lets_only_the_ses_events_topic_send(template):
    policy = props(template, "EventsQueuePolicy")
    assert policy["Queues"] == [{"Ref": "EventsQueue"}]
    allow = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert len(allow) == 1
    assert allow[0]["Principal"] == {"Service": "sns.amazonaws.com"}
    assert allow[0]["Action"] == "sqs:SendMessage"
    assert allow[0]["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Ref": "SesEventsTopic"}}}


# ---------------------------------------------------------------- IAM


def test_worker_role_grants_exactly_what_the_worker_needs(template):
    (policy,) = props(template, "WorkerRole")["Policies"]
    ses = {SES_IDENTITY_ADDRESS, SES_IDENTITY_DOMAIN, SES_CONFIGURATION_SET}
    item = {"IdempotencyTable.Arn"}
    assert grants(policy["PolicyDocument"]) == {
        "sqs:ReceiveMessage": {"JobQueue.Arn"},
        "sqs:DeleteMessage": {"JobQueue.Arn"},
        "sqs:GetQueueAttributes": {"JobQueue.Arn"},
        "sqs:SendMessage": {"ResultsQueue.Arn"},
        "ses:SendEmail": ses,
        "ses:SendRawEmail": ses,
        "s3:PutObject": {CERTIFICATE_OBJECTS},
        "dynamodb:BatchGetItem": item,
        "dynamodb:BatchWriteItem": item,
        "dynamodb:UpdateItem": item,
        "dynamodb:DeleteItem": item,
        "secretsmanager:GetSecretValue": {"CallbackSecretStore"},
        "logs:CreateLogStream": {"WorkerLogGroup.Arn"},
        "logs:PutLogEvents": {"WorkerLogGroup.Arn"},
    }
    assert "ManagedPolicyArns" not in props(template, "WorkerRole")


def test_sidecar_policy_grants_exactly_what_the_sidecar_calls(template):
    read_queues = {"ResultsQueue.Arn", "JobDeadLetterQueue.Arn", "EventsQueue.Arn"}
    assert grants(props(template, "SidecarPolicy")["PolicyDocument"]) == {
        "sqs:SendMessage": {"JobQueue.Arn"},
        "sqs:GetQueueAttributes": {"JobQueue.Arn"} | read_queues,
        "sqs:ReceiveMessage": read_queues,
        "sqs:DeleteMessage": read_queues,
        "s3:GetObject": {CERTIFICATE_OBJECTS},
        "s3:ListBucket": {"CertificateBucket.Arn"},
        "ses:GetSendQuota": {"*"},
        "ses:GetAccount": {"*"},
        "ses:GetIdentityVerificationAttributes": {"*"},
        "ses:GetEmailIdentity": {SES_IDENTITY_ADDRESS, SES_IDENTITY_DOMAIN},
    }
    assert template["Outputs"]["SidecarPolicyArn"]["Value"] == {"Ref": "SidecarPolicy"}


# ---------------------------------------------------------------- alarms


def alarm(template, namespace, metric, dimension=None):
    found = [
        p
        for p in (r["Properties"] for r in of_type(template, "AWS::CloudWatch::Alarm").values())
        if p["Namespace"] == namespace
        and p["MetricName"] == metric
        and (dimension is None or [d["Value"] for d in p.get("Dimensions", [])] == [dimension])
    ]
    assert len(found) == 1, f"{len(found)} alarms on {namespace} {metric} {dimension}"
    return found[0]


def test_dlq_alarm_fires_on_any_visible_message(template):
    p = alarm(template, "AWS/SQS", "ApproximateNumberOfMessagesVisible",
              {"Fn::GetAtt": ["JobDeadLetterQueue", "QueueName"]})  # fmt: skip
    assert (p["Threshold"], p["ComparisonOperator"]) == (0, "GreaterThanThreshold")


def test_job_queue_alarms_watch_depth_and_oldest_message(template):
    queue = {"Fn::GetAtt": ["JobQueue", "QueueName"]}
    depth = alarm(template, "AWS/SQS", "ApproximateNumberOfMessagesVisible", queue)
    age = alarm(template, "AWS/SQS", "ApproximateAgeOfOldestMessage", queue)
    assert depth["Threshold"] == {"Ref": "QueueDepthAlarmMessages"}
    assert age["Threshold"] == {"Ref": "QueueAgeAlarmSeconds"}


@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_worker_alarms_fire_on_any_error_or_throttle(template, metric):
    p = alarm(template, "AWS/Lambda", metric, {"Ref": "WorkerFunction"})
    assert (p["Statistic"], p["Threshold"], p["ComparisonOperator"]) == (
        "Sum",
        0,
        "GreaterThanThreshold",
    )


def test_ses_bounce_rate_alarm_fires_over_5_percent(template):
    p = alarm(template, "AWS/SES", "Reputation.BounceRate")
    assert (p["Threshold"], p["ComparisonOperator"]) == (0.05, "GreaterThanThreshold")


def test_ses_complaint_rate_alarm_fires_at_ses_review_level(template):
    p = alarm(template, "AWS/SES", "Reputation.ComplaintRate")
    assert p["Threshold"] <= 0.001 and p["ComparisonOperator"] == "GreaterThanThreshold"


def test_every_alarm_notifies_the_alarm_topic(template):
    for name, res in of_type(template, "AWS::CloudWatch::Alarm").items():
        assert {"Ref": "AlarmTopic"} in res["Properties"]["AlarmActions"], name


def test_alarm_email_subscription_is_optional(template):
    sub = template["Resources"]["AlarmEmailSubscription"]
    assert sub["Condition"] == "HasAlarmEmail"
    assert sub["Properties"]["Endpoint"] == {"Ref": "AlarmEmail"}
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""


# ---------------------------------------------------------------- outputs and docs


OUTPUT_VALUES = {
    "Region": {"Ref": "AWS::Region"},
    "SqsQueueUrl": {"Ref": "JobQueue"},
    "DlqUrl": {"Ref": "JobDeadLetterQueue"},
    "ResultsQueueUrl": {"Ref": "ResultsQueue"},
    "EventsQueueUrl": {"Ref": "EventsQueue"},
    "CertificateBucket": {"Ref": "CertificateBucket"},
    "SesConfigurationSet": {"Ref": "ConfigurationSet"},
    "SidecarPolicyArn": {"Ref": "SidecarPolicy"},
    "IdempotencyTable": {"Ref": "IdempotencyTable"},
    "WorkerFunctionName": {"Ref": "WorkerFunction"},
}


def test_outputs_reference_the_right_resources(template):
    outputs = template["Outputs"]
    for name, value in OUTPUT_VALUES.items():
        assert outputs[name]["Value"] == value, name
    assert "SenderAddress" in outputs


def test_deploy_prints_a_known_config_key_for_each_output(template):
    pairs = deploy_output_keys()
    fields = AwsConfig.model_fields
    required = {k for k, f in fields.items() if f.is_required()}
    assert {key for key, _ in pairs} >= required
    for key, output in pairs:
        assert key in fields, f"deploy.sh prints {key}, which [providers.aws] does not know"
        assert output in template["Outputs"], f"deploy.sh reads a missing output {output}"
    assert dict(pairs)["ses_events_queue_url"] == "EventsQueueUrl"


def test_docs_name_each_config_key_with_its_output():
    docs = DOCS.read_text(encoding="utf-8")
    for key, output in deploy_output_keys():
        assert re.search(rf"`{key}`.*`{output}`", docs), f"docs/aws.md: {key} <- {output}"
