#!/usr/bin/env bash
# Create the moodle-offload Worker's queues and R2 bucket, store its secrets, deploy it with
# the pinned wrangler, and print the [providers.cloudflare] TOML for the sidecar.
# Run ./deploy.sh --help. docs/cloudflare.md walks through it.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
worker_dir="$script_dir/worker"
# keep in step with worker/wrangler.jsonc
queues=(offload-jobs offload-jobs-dlq offload-results)
bucket="offload-certificates"

usage() {
  cat <<'EOF'
Usage: providers/cloudflare/deploy.sh [options]

Installs the Worker's pinned npm packages (npm ci), creates the queues offload-jobs,
offload-jobs-dlq and offload-results and the R2 bucket offload-certificates (kept if they
exist), stores the Worker's secrets, deploys it (wrangler deploy) and prints the
[providers.cloudflare] section of the sidecar's config.toml on stdout (progress on stderr).

Cloudflare credentials, as wrangler reads them:
  CLOUDFLARE_API_TOKEN   an API token allowed to edit Workers scripts, Queues, R2 and
                         Durable Objects (or run `npx wrangler login` once instead)
  CLOUDFLARE_ACCOUNT_ID  the account (required with more than one account)

Secrets (never taken as command-line arguments, never printed):
  --callback-secret-file PATH  its first non-empty line: the first of the sidecar's
                               [security] callback_secrets (that file format works as is);
                               or the environment variable CALLBACK_SECRET
  --email-api-key-file PATH    the Resend or SendGrid API key (with --email-sender);
                               or the environment variable EMAIL_API_KEY

Options:
  --email-sender KIND          binding (Cloudflare Email Service, the default), resend or
                               sendgrid: sets the Worker's EMAIL_SENDER var
  --report-mode MODE           http (POST to the sidecar's /callback, the default) or queue
                               (onto offload-results, pulled by the sidecar)
  --config-only                only print [providers.cloudflare] (nothing is changed)
  -h, --help                   this text

R2 access keys for the sidecar (it stores certificate PDFs and presigns their links through
R2's S3 API) are made in the dashboard: R2 → Manage API tokens → Object Read & Write on
offload-certificates. Put them in the printed r2_access_key_id and r2_secret_access_key.
EOF
}

die() {
  echo "deploy.sh: $*" >&2
  exit 1
}

first_line() {
  # the first non-empty line of a file, whitespace trimmed
  local line
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line#"${line%%[![:space:]]*}"}"
    line="${line%"${line##*[![:space:]]}"}"
    if [ -n "$line" ]; then
      printf '%s' "$line"
      return 0
    fi
  done <"$1"
  return 1
}

callback_secret_file="" email_key_file="" email_sender="" report_mode="" config_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --callback-secret | --callback-secret=* | --email-api-key | --email-api-key=*)
      die "${1%%=*} is not taken as an argument (it would show in ps and shell history): use ${1%%=*}-file PATH or the environment" ;;
    --callback-secret-file) callback_secret_file="${2:?--callback-secret-file needs a path}"; shift ;;
    --email-api-key-file) email_key_file="${2:?--email-api-key-file needs a path}"; shift ;;
    --email-sender) email_sender="${2:?--email-sender needs binding, resend or sendgrid}"; shift ;;
    --report-mode) report_mode="${2:?--report-mode needs http or queue}"; shift ;;
    --config-only) config_only=1 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
case "$email_sender" in "" | binding | resend | sendgrid) ;; *) die "--email-sender: binding, resend or sendgrid" ;; esac
case "$report_mode" in "" | http | queue) ;; *) die "--report-mode: http or queue" ;; esac

command -v npm >/dev/null || die "npm not found: install Node.js 20 or later"
cd "$worker_dir"
wrangler() { npx --no-install wrangler "$@"; }

if [ "$config_only" = 0 ]; then
  callback_secret="${CALLBACK_SECRET:-}"
  if [ -n "$callback_secret_file" ]; then
    callback_secret="$(first_line "$callback_secret_file")" || die "$callback_secret_file: no secret in it"
  fi
  [ -n "$callback_secret" ] || die "no callback secret: --callback-secret-file PATH or CALLBACK_SECRET"
  [ "${#callback_secret}" -ge 32 ] || die "the callback secret is shorter than 32 characters"
  email_key="${EMAIL_API_KEY:-}"
  if [ -n "$email_key_file" ]; then
    email_key="$(first_line "$email_key_file")" || die "$email_key_file: no key in it"
  fi
  if [ "$email_sender" = resend ] || [ "$email_sender" = sendgrid ]; then
    [ -n "$email_key" ] || die "--email-sender $email_sender needs --email-api-key-file PATH or EMAIL_API_KEY"
  fi

  echo "deploy.sh: npm ci in providers/cloudflare/worker" >&2
  npm ci --no-audit --no-fund >&2
  for q in "${queues[@]}"; do
    if wrangler queues info "$q" >/dev/null 2>&1; then
      echo "deploy.sh: queue $q exists" >&2
    else
      wrangler queues create "$q" >&2
    fi
  done
  if wrangler r2 bucket info "$bucket" >/dev/null 2>&1; then
    echo "deploy.sh: R2 bucket $bucket exists" >&2
  else
    wrangler r2 bucket create "$bucket" >&2
  fi
  vars=()
  [ -n "$email_sender" ] && vars+=(--var "EMAIL_SENDER:$email_sender")
  [ -n "$report_mode" ] && vars+=(--var "REPORT_MODE:$report_mode")
  # deploy first: a secret needs the Worker to exist; until it is stored the Worker's
  # /health says CALLBACK_SECRET is missing and /enqueue answers 503
  deployed="$(wrangler deploy "${vars[@]}" 2>&1 | tee /dev/stderr)"
  printf '%s' "$callback_secret" | wrangler secret put CALLBACK_SECRET >&2
  if [ -n "$email_key" ]; then
    printf '%s' "$email_key" | wrangler secret put EMAIL_API_KEY >&2
  fi
  worker_url="$(grep -o 'https://[^ ]*\.workers\.dev' <<<"$deployed" | head -1 || true)"
fi

queue_id="$(wrangler queues info offload-jobs 2>/dev/null | sed -n 's/^Queue ID: //p' | head -1 || true)"
account_id="${CLOUDFLARE_ACCOUNT_ID:-}"
[ -n "${worker_url:-}" ] || worker_url="https://moodle-offload.<your-subdomain>.workers.dev"
r2_endpoint="https://$account_id.r2.cloudflarestorage.com"
if [ -z "$account_id" ]; then
  account_id="<account id: dashboard → Workers & Pages → Account ID>"
  r2_endpoint="https://<account id>.r2.cloudflarestorage.com"
fi

cat <<EOF
[providers.cloudflare]
worker_url = "$worker_url"
account_id = "$account_id"
# the jobs queue, for the Queues HTTP API mode (no Worker route needed)
queue_id = "${queue_id:-<wrangler queues info offload-jobs>}"
# Cloudflare API token with Queues Edit, for the Queues HTTP API mode. SECRET.
auth_token = "env:CF_API_TOKEN"
r2_bucket = "$bucket"
r2_endpoint = "$r2_endpoint"
# R2 → Manage API tokens (Object Read & Write on $bucket)
r2_access_key_id = "<R2 access key id>"
# SECRET.
r2_secret_access_key = "env:R2_SECRET_ACCESS_KEY"
EOF
echo "deploy.sh: done; check it with: moodle-offload check" >&2
