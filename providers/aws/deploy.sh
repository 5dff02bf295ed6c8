#!/usr/bin/env bash
# Build the moodle-offload Lambda worker, deploy providers/aws/template.yaml with the AWS
# CLI (v1 or v2), and print the [providers.aws] TOML filled from the stack's outputs.
# Run ./deploy.sh --help. docs/aws.md walks through it.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$script_dir/../.." && pwd)"
template="$script_dir/template.yaml"

# The worker's runtime needs beyond the Lambda runtime's boto3 (keep in step with
# pyproject.toml); the repo's providers/ package (with providers/local/fonts/) is added.
worker_requirements=("xhtml2pdf>=0.2.24" "qrcode>=7.4")
lambda_python="3.12"
lambda_platform="manylinux2014_x86_64"

usage() {
  cat <<'EOF'
Usage: providers/aws/deploy.sh --region REGION --artifacts-bucket BUCKET [options]

Builds the Lambda worker (pip wheels for manylinux2014_x86_64 / Python 3.12 plus the
repo's providers/ package), uploads it to the artifacts bucket, creates or updates the
CloudFormation stack through a change set, and prints the [providers.aws] section of
the sidecar's config.toml (on stdout; progress goes to stderr).

Required:
  --region REGION             AWS region of the stack (default: $AWS_REGION, then
                              $AWS_DEFAULT_REGION); SES must be available there
  --artifacts-bucket BUCKET   existing S3 bucket in that region for the worker's zip
                              (and the template when it is over 51,200 bytes)
  --sender ADDRESS            bare From address, e.g. noreply@example.org (required when
                              the stack is created; kept on updates unless given)

The callback secret (first time only; an update keeps the stored one unless given):
  --callback-secret-file PATH its first non-empty line (the sidecar's
                              security.callback_secrets_file format works as is)
  or the environment variable CALLBACK_SECRET (the name config.example.toml uses).
  It is never taken as a command-line argument and never printed. 32+ characters,
  e.g.: python3 -c 'import secrets; print(secrets.token_urlsafe(48))'

Options (omitted ones keep the stack's current value, or the template default):
  --stack-name NAME           default: moodle-offload
  --sender-name NAME          display name before the address ("Academy")
  --create-identity MODE      none | address | domain: create the SES identity too
  --alarm-email ADDRESS       subscribe an address to the alarm topic
  --max-concurrency N         worker invocations at once (>= 2; ~7 emails/s each)
  --max-receive-count N       receives before a job message goes to the DLQ (default 5)
  --certificate-prefix P      key prefix of certificate PDFs (default certificates/)
  --certificate-expiry-days N delete certificate PDFs after N days (0 = keep)
  --log-retention-days N      worker log retention (default 30)
  --point-in-time-recovery B  true | false for the idempotency table
  --delivery-events B         true | false: also publish SES delivery events
  --artifacts-prefix P        key prefix in the artifacts bucket (default moodle-offload/)
  --build-dir DIR             build here and keep it (default: a temporary directory)
  --no-execute                create and show the change set, do not execute it
  --config-only               only print [providers.aws] from the existing stack
  -h, --help                  this text

Environment: AWS credentials and AWS_PROFILE as the AWS CLI reads them; PYTHON (default
python3) runs pip (19.3+) and the zip step.
EOF
}

log() { printf 'deploy.sh: %s\n' "$*" >&2; }
die() { printf 'deploy.sh: error: %s\n' "$*" >&2; exit 1; }

stack_name="moodle-offload"
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
artifacts_bucket=""
artifacts_prefix="moodle-offload/"
secret_file=""
build_dir=""
no_execute=0
config_only=0
overrides=""  # "Key=Value" lines of template parameters given on the command line

add_override() {
  [[ "$2" != *$'\n'* ]] || die "the value for $1 has a line break"
  overrides+="$1=$2"$'\n'
}
has_override() { [[ $'\n'"$overrides" == *$'\n'"$1="* ]]; }

while (($#)); do
  arg="$1"
  shift
  value=""
  case "$arg" in
    --*=*) value="${arg#*=}"; arg="${arg%%=*}" ;;
    -h | --help) usage; exit 0 ;;
    --no-execute) no_execute=1; continue ;;
    --config-only) config_only=1; continue ;;
    --callback-secret)
      die "--callback-secret is refused: a command line shows in ps and shell history;" \
        "use --callback-secret-file PATH or the CALLBACK_SECRET environment variable" ;;
    --*)
      (($#)) || die "$arg needs a value (see --help)"
      value="$1"
      shift
      ;;
    *) die "unexpected argument '$arg' (see --help)" ;;
  esac
  case "$arg" in
    --stack-name) stack_name="$value" ;;
    --region) region="$value" ;;
    --artifacts-bucket) artifacts_bucket="$value" ;;
    --artifacts-prefix) artifacts_prefix="$value" ;;
    --callback-secret-file) secret_file="$value" ;;
    --build-dir) build_dir="$value" ;;
    --sender) add_override SenderEmail "$value" ;;
    --sender-name) add_override SenderName "$value" ;;
    --create-identity) add_override CreateSenderIdentity "$value" ;;
    --alarm-email) add_override AlarmEmail "$value" ;;
    --max-concurrency) add_override MaxConcurrency "$value" ;;
    --max-receive-count) add_override MaxReceiveCount "$value" ;;
    --certificate-prefix) add_override CertificatePrefix "$value" ;;
    --certificate-expiry-days) add_override CertificateExpiryDays "$value" ;;
    --log-retention-days) add_override LogRetentionDays "$value" ;;
    --point-in-time-recovery) add_override PointInTimeRecovery "$value" ;;
    --delivery-events) add_override PublishDeliveryEvents "$value" ;;
    --no-execute | --config-only | -h | --help)
      die "$arg takes no value" ;;
    --callback-secret)
      die "--callback-secret is refused: use --callback-secret-file or CALLBACK_SECRET" ;;
    *) die "unknown option '$arg' (see --help)" ;;
  esac
done

[[ -n "$region" ]] || die "no region: pass --region REGION (or set AWS_REGION)"
[[ "$stack_name" =~ ^[A-Za-z][A-Za-z0-9-]{0,127}$ ]] \
  || die "--stack-name '$stack_name': letters, digits and hyphens, starting with a letter"
[[ -z "$artifacts_prefix" || "$artifacts_prefix" == */ ]] || artifacts_prefix="$artifacts_prefix/"

command -v aws >/dev/null || die "the AWS CLI (aws) is not installed: see https://aws.amazon.com/cli/"
PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found: set PYTHON to a Python 3 interpreter"
export AWS_PAGER=""

cfn() { aws cloudformation --region "$region" "$@"; }

# Prints [providers.aws] (and comments with the rest the admin needs) from the outputs.
print_config() {
  local outputs
  outputs="$(cfn describe-stacks --stack-name "$stack_name" \
    --query 'Stacks[0].Outputs' --output json)" || die "cannot read the outputs of $stack_name"
  "$PYTHON" -c '
import json, sys

outputs = {o["OutputKey"]: o["OutputValue"] for o in (json.loads(sys.argv[1]) or [])}
keys = [
    ("region", "Region"),
    ("sqs_queue_url", "SqsQueueUrl"),
    ("dlq_url", "DlqUrl"),
    ("results_queue_url", "ResultsQueueUrl"),
    ("ses_events_queue_url", "EventsQueueUrl"),
    ("s3_bucket", "CertificateBucket"),
    ("ses_from", "SenderAddress"),
    ("ses_configuration_set", "SesConfigurationSet"),
]
missing = [out for _, out in keys if out not in outputs]
if missing:
    sys.exit("deploy.sh: error: the stack lacks the outputs " + ", ".join(missing))


def toml(value):
    escaped = value.replace("\\", "\\\\").replace("\"", "\\\"")
    return "\"" + "".join(c if c >= " " else "\\u%04x" % ord(c) for c in escaped) + "\""


print("# From CloudFormation stack outputs; see docs/aws.md.")
print("# Attach this managed policy to the IAM user or role the sidecar runs as:")
print("#   " + outputs.get("SidecarPolicyArn", "?"))
print("# Certificate keys must start with " + outputs.get("CertificatePrefix", "?"))
print("# security.callback_secrets must start with the secret given to deploy.sh.")
for n in "123":
    if "DkimRecord" + n in outputs:
        print("# DNS (DKIM): " + outputs["DkimRecord" + n])
print("[providers.aws]")
for key, out in keys:
    print(key + " = " + toml(outputs[out]))
' "$outputs"
}

# One "Key=Value" line per template parameter name, read without a YAML library: the
# template keeps its parameters as two-space-indented keys under "Parameters:".
template_parameters() {
  awk '/^Parameters:/ {on = 1; next} /^[^ #]/ {on = 0} on && /^  [A-Za-z0-9]+:$/ {
    sub(/^  /, ""); sub(/:$/, ""); print }' "$template"
}

stack_status() {
  local out
  if out="$(cfn describe-stacks --stack-name "$stack_name" \
    --query 'Stacks[0].StackStatus' --output text 2>&1)"; then
    printf '%s\n' "$out"
  elif [[ "$out" == *"does not exist"* ]]; then
    printf 'NONE\n'
  else
    die "cannot describe stack $stack_name in $region: $out"
  fi
}

if ((config_only)); then
  print_config
  exit 0
fi

[[ -n "$artifacts_bucket" ]] || die "no artifacts bucket: pass --artifacts-bucket BUCKET"

status="$(stack_status)"
case "$status" in
  NONE | REVIEW_IN_PROGRESS) change_type=CREATE ;;
  ROLLBACK_COMPLETE | ROLLBACK_FAILED | DELETE_FAILED)
    die "stack $stack_name is $status: delete it first" \
      "(aws cloudformation delete-stack --region $region --stack-name $stack_name)" ;;
  *_IN_PROGRESS) die "stack $stack_name is $status: wait until it settles, then run again" ;;
  UPDATE_ROLLBACK_FAILED)
    die "stack $stack_name is UPDATE_ROLLBACK_FAILED: continue the rollback first" \
      "(aws cloudformation continue-update-rollback --stack-name $stack_name)" ;;
  *) change_type=UPDATE ;;
esac
log "stack $stack_name in $region: ${status} -> ${change_type}"

if [[ "$change_type" == CREATE ]]; then
  has_override SenderEmail || die "a new stack needs --sender ADDRESS"
  [[ -n "$secret_file" || -n "${CALLBACK_SECRET:-}" ]] \
    || die "a new stack needs the callback secret: --callback-secret-file PATH or CALLBACK_SECRET"
fi
if [[ -n "$secret_file" ]]; then
  [[ -r "$secret_file" ]] || die "--callback-secret-file $secret_file: cannot read it"
fi

bucket_region="$(aws s3api get-bucket-location --bucket "$artifacts_bucket" \
  --query LocationConstraint --output text)" \
  || die "cannot read the location of bucket $artifacts_bucket (does it exist, may you read it?)"
case "$bucket_region" in None | null | "") bucket_region=us-east-1 ;; EU) bucket_region=eu-west-1 ;; esac
[[ "$bucket_region" == "$region" ]] \
  || die "bucket $artifacts_bucket is in $bucket_region; Lambda needs its code in $region"

umask 077
work_dir="$(mktemp -d "${TMPDIR:-/tmp}/moodle-offload-deploy.XXXXXX")"
trap 'rm -rf "$work_dir"' EXIT
[[ -n "$build_dir" ]] || build_dir="$work_dir/build"
mkdir -p "$build_dir"
build_dir="$(cd "$build_dir" && pwd)"

# ---------------------------------------------------------------- build the package
package="$build_dir/package"
rm -rf "${package:?}"
mkdir -p "$package"
log "installing ${worker_requirements[*]} for Python $lambda_python on $lambda_platform"
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-compile \
  --target "$package" --platform "$lambda_platform" --implementation cp \
  --python-version "$lambda_python" --only-binary=:all: "${worker_requirements[@]}" \
  || die "pip could not install the worker's requirements as $lambda_platform wheels"
rm -rf "${package:?}/bin"

log "adding the providers package from $repo_root"
tar -C "$repo_root" --exclude='__pycache__' --exclude='*.pyc' --exclude='node_modules' \
  --exclude='providers/aws/deploy.sh' --exclude='providers/aws/template.yaml' \
  -cf - providers | tar -C "$package" -xf -
[[ -f "$package/providers/aws/worker/handler.py" ]] \
  || die "providers/aws/worker/handler.py is missing: the worker is not in this checkout"
compgen -G "$package/providers/local/fonts/*.ttf" >/dev/null \
  || die "providers/local/fonts/*.ttf are missing: certificates would lose their letters"

# Byte code for the Lambda's Python, when that Python is here (faster cold starts);
# hash-based .pyc files keep the zip reproducible.
if command -v "python$lambda_python" >/dev/null; then
  "python$lambda_python" -m compileall -q -j 0 --invalidation-mode unchecked-hash "$package" \
    >/dev/null 2>&1 || log "compileall with python$lambda_python failed; shipping sources only"
fi

zip_file="$build_dir/worker.zip"
code_sha="$("$PYTHON" - "$package" "$zip_file" <<'PY'
# A reproducible zip: sorted entries, fixed timestamps, normalised modes.
import hashlib, os, stat, sys, zipfile

root, out = sys.argv[1], sys.argv[2]
paths = []
for folder, dirs, names in os.walk(root):
    dirs.sort()
    paths.extend(os.path.join(folder, n) for n in names)
paths.sort(key=lambda p: os.path.relpath(p, root))
unpacked = 0
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
    for path in paths:
        info = zipfile.ZipInfo(os.path.relpath(path, root).replace(os.sep, "/"),
                               date_time=(1980, 1, 1, 0, 0, 0))
        mode = 0o755 if os.stat(path).st_mode & stat.S_IXUSR else 0o644
        info.external_attr = (stat.S_IFREG | mode) << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as fh:
            data = fh.read()
        unpacked += len(data)
        zf.writestr(info, data)
if unpacked > 250 * 1024 * 1024:
    sys.exit("deploy.sh: error: the package unpacks to %d MB, over Lambda's 250 MB"
             % (unpacked // 2**20))
with open(out, "rb") as fh:
    print(hashlib.sha256(fh.read()).hexdigest())
PY
)" || die "could not zip the package"
code_key="${artifacts_prefix}worker-${code_sha:0:32}.zip"
log "package $(du -h "$zip_file" | cut -f1) -> s3://$artifacts_bucket/$code_key"
if ! aws s3api head-object --region "$region" --bucket "$artifacts_bucket" --key "$code_key" \
  >/dev/null 2>&1; then
  aws s3 cp --region "$region" --only-show-errors "$zip_file" "s3://$artifacts_bucket/$code_key"
fi
add_override CodeBucket "$artifacts_bucket"
add_override CodeKey "$code_key"

# ---------------------------------------------------------------- parameters
# Written as JSON to a 0600 file the CLI reads (file://), so the secret is never in
# argv; Python reads the secret itself from the file or the environment.
previous_keys=""
if [[ "$change_type" == UPDATE ]]; then
  previous_keys="$(cfn describe-stacks --stack-name "$stack_name" \
    --query 'Stacks[0].Parameters[].ParameterKey' --output text)"
fi
params_file="$work_dir/parameters.json"
SECRET_FILE="$secret_file" TEMPLATE_KEYS="$(template_parameters)" PREVIOUS_KEYS="$previous_keys" \
  OVERRIDES="$overrides" "$PYTHON" - "$params_file" <<'PY' || exit 1
import json, os, sys

template_keys = os.environ["TEMPLATE_KEYS"].split()
previous = set(os.environ["PREVIOUS_KEYS"].split())
values = dict(line.split("=", 1) for line in os.environ["OVERRIDES"].splitlines() if line)
unknown = sorted(set(values) - set(template_keys))
if unknown:
    sys.exit("deploy.sh: error: the template has no parameter " + ", ".join(unknown))

secret = None
if os.environ["SECRET_FILE"]:
    with open(os.environ["SECRET_FILE"], encoding="utf-8") as fh:
        lines = [line.strip() for line in fh.read().splitlines() if line.strip()]
    secret = lines[0] if lines else ""
elif os.environ.get("CALLBACK_SECRET"):
    secret = os.environ["CALLBACK_SECRET"].strip()
if secret is not None:
    if len(secret) < 32:
        sys.exit("deploy.sh: error: the callback secret is shorter than 32 characters")
    values["CallbackSecret"] = secret

params = []
for key in template_keys:
    if key in values:
        params.append({"ParameterKey": key, "ParameterValue": values[key]})
    elif key in previous:
        params.append({"ParameterKey": key, "UsePreviousValue": True})
with open(sys.argv[1], "w", encoding="utf-8") as fh:
    json.dump(params, fh)
PY

# ---------------------------------------------------------------- change set
template_args=(--template-body "file://$template")
if (($(wc -c <"$template") > 51200)); then
  template_key="${artifacts_prefix}template-${code_sha:0:12}-$(date -u +%Y%m%d%H%M%S).yaml"
  aws s3 cp --region "$region" --only-show-errors "$template" "s3://$artifacts_bucket/$template_key"
  template_args=(--template-url "https://$artifacts_bucket.s3.$region.amazonaws.com/$template_key")
fi

change_set="moodle-offload-$(date -u +%Y%m%d%H%M%S)"
log "creating change set $change_set"
cfn create-change-set --stack-name "$stack_name" --change-set-name "$change_set" \
  --change-set-type "$change_type" --capabilities CAPABILITY_IAM \
  --parameters "file://$params_file" "${template_args[@]}" \
  --tags Key=application,Value=moodle-offload \
  --description "moodle-offload deploy.sh" >/dev/null
rm -f "$params_file"

if ! cfn wait change-set-create-complete --stack-name "$stack_name" \
  --change-set-name "$change_set"; then
  reason="$(cfn describe-change-set --stack-name "$stack_name" --change-set-name "$change_set" \
    --query StatusReason --output text 2>/dev/null || true)"
  if [[ "$reason" == *"didn't contain changes"* || "$reason" == *"No updates are to be performed"* ]]; then
    log "no changes to deploy"
    cfn delete-change-set --stack-name "$stack_name" --change-set-name "$change_set" || true
    print_config
    exit 0
  fi
  die "change set $change_set failed: ${reason:-unknown reason}"
fi

cfn describe-change-set --stack-name "$stack_name" --change-set-name "$change_set" \
  --query 'Changes[].ResourceChange.[Action,LogicalResourceId,ResourceType,Replacement]' \
  --output table >&2

if ((no_execute)); then
  log "not executed (--no-execute); to apply it:"
  log "  aws cloudformation execute-change-set --region $region --stack-name $stack_name --change-set-name $change_set"
  exit 0
fi

log "executing change set $change_set (this takes a few minutes)"
cfn execute-change-set --stack-name "$stack_name" --change-set-name "$change_set"
if [[ "$change_type" == CREATE ]]; then waiter=stack-create-complete; else waiter=stack-update-complete; fi
if ! cfn wait "$waiter" --stack-name "$stack_name"; then
  log "the stack did not reach ${waiter%-complete} complete; its failed events:"
  # shellcheck disable=SC2016  # the backquotes are a JMESPath literal
  cfn describe-stack-events --stack-name "$stack_name" --max-items 40 \
    --query 'StackEvents[?contains(ResourceStatus, `FAILED`)].[LogicalResourceId,ResourceStatusReason]' \
    --output text >&2 || true
  die "deploying $stack_name failed"
fi
log "stack $stack_name is ready"
print_config
