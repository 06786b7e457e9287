#!/usr/bin/env bash
# Deploys the TradingView -> Fyers order router to Google Cloud, in one idempotent command.
#
#   deploy/deploy.sh --config deploy/my.env [--secrets-file FILE|-] [--dry-run [--assume-empty]]
#
# Every resource is looked up first (describe/list) and created only when missing, so a
# re-run over a complete deployment creates nothing. The four function deploys and the
# Cloud Scheduler job updates are re-applied on every run: both are updates in place.
#
# Each mutating command is echoed on stdout as "RUN: gcloud ..." before it runs; with
# --dry-run it is echoed as "DRY-RUN: gcloud ..." and not run, while the read-only lookups
# still run so that the plan shows only what is missing. Progress notes go to stderr.
#
# Secrets: which exist, and which function reads, writes or mounts which, comes from
# common/secret_table.py. Values are never read back, passed on a command line or printed:
# before anything is changed, the values still missing are asked for (hidden input, in a
# terminal) or read from --secrets-file, and handed to gcloud on its standard input. A
# secret that a deploy mounts must have a value before that deploy; when none can be had,
# the script stops before changing anything and prints the commands to run first.
set -euo pipefail

if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 404)); then
  echo "deploy.sh needs bash 4.4 or newer (Cloud Shell and Linux have it; on macOS: brew install bash)." >&2
  exit 1
fi

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$SCRIPT_DIR")

# --- fixed names: the code reads these, so they are not configurable -------------------
ORDERS_TOPIC=orders
DLQ_TOPIC=orders-dlq
NOTIFICATIONS_TOPIC=notifications
DLQ_PULL_SUBSCRIPTION=orders-dlq-hold
NOTIFICATIONS_PULL_SUBSCRIPTION=notifications-log
FIRESTORE_DB='(default)'
TIME_ZONE=Asia/Kolkata   # market hours and every schedule are in IST
RUNTIME=python312
APIS=(cloudfunctions run cloudbuild artifactregistry eventarc pubsub firestore secretmanager
  cloudscheduler compute vpcaccess storage logging iam)
# Firestore collections whose documents carry expire_at (deleted within about 24 h of it).
TTL_COLLECTIONS=(alerts auth_states auth_events login_links dedupe_keys)
# Cloud Functions builds run as their own account, with the roles its builds need
# (https://cloud.google.com/functions/docs/securing/build-custom-sa): projects created
# since 2024 give the default build account no roles at all.
BUILD_ROLES=(roles/logging.logWriter roles/artifactregistry.writer roles/storage.objectViewer)
# Cloud Scheduler retries a failed call (e.g. a cold instance's 5xx) after 30 s, 60 s, 120 s.
JOB_RETRY=(--min-backoff=30s --max-backoff=120s --max-doublings=2)

# Config keys read by this script. Any other key must be a router setting (an alias in
# common/settings.py) and is passed to every function as an environment variable.
DEPLOY_KEYS=(PROJECT REGION ARTIFACT_BUCKET SOURCE_DIR SCHEDULER_LOCATION JOB_MAX_RETRY_ATTEMPTS
  MAX_DELIVERY_ATTEMPTS MIN_RETRY_DELAY_SECONDS MAX_RETRY_DELAY_SECONDS
  SCHEDULE_SESSION_OPEN SCHEDULE_SESSION_HOURLY SCHEDULE_SYMBOLS SCHEDULE_RECONCILE SCHEDULE_HEALTH
  WEBHOOK_MEMORY WEBHOOK_CPU WEBHOOK_TIMEOUT WEBHOOK_CONCURRENCY WEBHOOK_MIN_INSTANCES WEBHOOK_MAX_INSTANCES
  WORKER_MEMORY WORKER_CPU WORKER_TIMEOUT WORKER_CONCURRENCY
  SCHEDULER_MEMORY SCHEDULER_CPU SCHEDULER_TIMEOUT SCHEDULER_CONCURRENCY SCHEDULER_MAX_INSTANCES
  AUTH_MEMORY AUTH_CPU AUTH_TIMEOUT AUTH_CONCURRENCY AUTH_MAX_INSTANCES
  VPC_NETWORK VPC_SUBNET VPC_SUBNET_RANGE VPC_ROUTER VPC_NAT STATIC_IP_NAME
  VPC_CONNECTOR CONNECTOR_MACHINE_TYPE CONNECTOR_MIN_INSTANCES CONNECTOR_MAX_INSTANCES)
# Router settings that this script sets itself; a config file may not override them.
MANAGED_SETTINGS=(GOOGLE_CLOUD_PROJECT SECRET_BACKEND SECRET_PROJECT ARTIFACT_BACKEND ARTIFACT_BUCKET
  ARTIFACT_DIR ORDERS_TOPIC NOTIFICATIONS_TOPIC AUTH_REDIRECT_URL AUTH_PUBLIC_URL)
ENV_DELIMITER='|'   # gcloud's ^DELIM^ list syntax, so that values may contain commas

# --- output ---------------------------------------------------------------------------
say() { printf '%s\n' "$*" >&2; }
die() {
  printf 'deploy.sh: error: %s\n' "$*" >&2
  exit 1
}

# Quotes arguments so that the echoed command can be pasted back into a shell.
shell_quote() {
  local arg out="" safe='^[A-Za-z0-9_./:=@,+%^-]+$'
  for arg in "$@"; do
    if [[ $arg =~ $safe ]]; then
      out+="$arg "
    else
      out+="'${arg//\'/\'\\\'\'}' "
    fi
  done
  printf '%s' "${out% }"
}

usage() {
  cat <<'USAGE'
Usage: deploy/deploy.sh --config FILE [--secrets-file FILE|-] [--dry-run [--assume-empty]]

  --config FILE        KEY=VALUE settings (see deploy/config.example.env)
  --secrets-file FILE  NAME=VALUE lines giving the values of secrets that have none yet
                       ('-': read them from standard input). Without it, a run in a
                       terminal asks for each missing value, without echoing it.
  --dry-run            print the commands that would change something, change nothing
  --assume-empty       with --dry-run: look nothing up and plan as for an empty project
                       (without it, a dry run that cannot look anything up fails)
USAGE
}

# --- arguments and config ---------------------------------------------------------------
CONFIG_FILE=""
SECRETS_FILE=""
DRY_RUN=0
ASSUME_EMPTY=0
while (($#)); do
  case $1 in
    --config) [[ $# -ge 2 ]] || die "--config needs a file"; CONFIG_FILE=$2; shift 2 ;;
    --config=*) CONFIG_FILE=${1#--config=}; shift ;;
    --secrets-file) [[ $# -ge 2 ]] || die "--secrets-file needs a file"; SECRETS_FILE=$2; shift 2 ;;
    --secrets-file=*) SECRETS_FILE=${1#--secrets-file=}; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --assume-empty) ASSUME_EMPTY=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ -n $CONFIG_FILE ]] || { usage >&2; die "--config is required"; }
((!ASSUME_EMPTY || DRY_RUN)) || die "--assume-empty only goes with --dry-run"

declare -A CFG=()
# Reads KEY=VALUE lines. '#' starts a comment, at the start of a line or after a space;
# a value may be quoted ("..." or '...'). Nothing is expanded or executed.
load_config() {
  local file=$1 line n=0 key value
  local blank='^[[:space:]]*(#.*)?$' pair='^[[:space:]]*([A-Z][A-Z0-9_]*)[[:space:]]*=(.*)$'
  local dquoted='^"([^"]*)"[[:space:]]*(#.*)?$' squoted="^'([^']*)'[[:space:]]*(#.*)?\$"
  [[ -f $file ]] || die "config file not found: $file"
  while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    line=${line%$'\r'}
    [[ $line =~ $blank ]] && continue
    [[ $line =~ $pair ]] || die "$file:$n: expected KEY=VALUE"
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    value=${value#"${value%%[![:space:]]*}"}
    if [[ $value =~ $dquoted || $value =~ $squoted ]]; then
      value=${BASH_REMATCH[1]}
    else
      value=${value%%[[:space:]]#*}
      value=${value%"${value##*[![:space:]]}"}
    fi
    CFG[$key]=$value
  done <"$file"
}

# cfg KEY DEFAULT: the configured value, or DEFAULT when unset or empty.
cfg() { printf '%s' "${CFG[$1]:-$2}"; }

in_list() {
  local needle=$1 item
  shift
  for item in "$@"; do [[ $item == "$needle" ]] && return 0; done
  return 1
}

load_config "$CONFIG_FILE"

PROJECT=$(cfg PROJECT "")
[[ -n $PROJECT ]] || die "PROJECT is required in $CONFIG_FILE"
[[ $PROJECT =~ ^[a-z][a-z0-9-]{4,28}[a-z0-9]$ ]] || die "PROJECT '$PROJECT' is not a valid project id"
REGION=$(cfg REGION asia-south1)
SCHEDULER_LOCATION=$(cfg SCHEDULER_LOCATION "$REGION")
ARTIFACT_BUCKET=$(cfg ARTIFACT_BUCKET "$PROJECT-tv-fyers-artifacts")
SOURCE_DIR=$(cfg SOURCE_DIR "$REPO_ROOT")
[[ $SOURCE_DIR == /* ]] || SOURCE_DIR="$REPO_ROOT/$SOURCE_DIR"
[[ -d $SOURCE_DIR ]] || die "SOURCE_DIR $SOURCE_DIR is not a directory"
SOURCE_DIR=$(cd "$SOURCE_DIR" && pwd)

SETTINGS_FILE="$SOURCE_DIR/common/settings.py"
[[ -f $SETTINGS_FILE ]] || die "$SETTINGS_FILE not found: cannot tell router settings from typos"
mapfile -t SETTING_NAMES < <(grep -oE 'alias="[A-Z][A-Z0-9_]*"' "$SETTINGS_FILE" | cut -d'"' -f2 | sort -u)

# --- the secret table (common/secret_table.py, the code's own) ------------------------------
command -v python3 >/dev/null || die "python3 not found on PATH (it prints common/secret_table.py for this script)"
[[ -f $SOURCE_DIR/common/secret_table.py ]] || die "$SOURCE_DIR/common/secret_table.py not found"
TABLE=$(cd "$SOURCE_DIR" && python3 -m common.secret_table shell) || die "cannot read common/secret_table.py"
SECRETS=()            # every secret, in the table's order
OPERATOR_SECRETS=()   # the ones whose value the operator supplies
declare -A REQUIRED=() READS=() WRITES=() MOUNTS=()   # READS[function]="NAME NAME ..."
while read -r kind a b c; do
  case $kind in
    secret)
      SECRETS+=("$a")
      [[ $b == operator ]] && OPERATOR_SECRETS+=("$a")
      [[ $c == required ]] && REQUIRED[$a]=1
      ;;
    reads) READS[$a]+="$b " ;;
    writes) WRITES[$a]+="$b " ;;
    mounts) MOUNTS[$a]+="$b " ;;
    *) die "unexpected line in the secret table: $kind" ;;
  esac
done <<<"$TABLE"

# Router settings from the config, in file-independent (sorted) order.
FORWARDED=()
for key in $(printf '%s\n' "${!CFG[@]}" | sort); do
  if in_list "$key" "${DEPLOY_KEYS[@]}"; then continue; fi
  if in_list "$key" "${SECRETS[@]}"; then
    die "$key is a secret: remove it from $CONFIG_FILE and give it with --secrets-file or when asked (docs/deploy.md)"
  fi
  if in_list "$key" "${MANAGED_SETTINGS[@]}"; then die "$key is set by deploy.sh; remove it from $CONFIG_FILE"; fi
  in_list "$key" "${SETTING_NAMES[@]}" || die "unknown config key $key (not a deploy key nor a setting in common/settings.py)"
  value=${CFG[$key]}
  [[ $value != *"$ENV_DELIMITER"* ]] || die "$key must not contain '$ENV_DELIMITER'"
  if [[ -n $value ]]; then FORWARDED+=("$key=$value"); fi
done

need_int() { # NAME VALUE MIN MAX
  if ! [[ $2 =~ ^[0-9]+$ ]] || (($2 < $3 || $2 > $4)); then
    die "$1 must be an integer in [$3, $4], got '$2'"
  fi
}

MAX_DELIVERY_ATTEMPTS=$(cfg MAX_DELIVERY_ATTEMPTS 5)
MIN_RETRY_DELAY=$(cfg MIN_RETRY_DELAY_SECONDS 10)
MAX_RETRY_DELAY=$(cfg MAX_RETRY_DELAY_SECONDS 60)
need_int MAX_DELIVERY_ATTEMPTS "$MAX_DELIVERY_ATTEMPTS" 5 100
need_int MIN_RETRY_DELAY_SECONDS "$MIN_RETRY_DELAY" 0 600
need_int MAX_RETRY_DELAY_SECONDS "$MAX_RETRY_DELAY" "$MIN_RETRY_DELAY" 600
JOB_MAX_RETRY_ATTEMPTS=$(cfg JOB_MAX_RETRY_ATTEMPTS 3)
need_int JOB_MAX_RETRY_ATTEMPTS "$JOB_MAX_RETRY_ATTEMPTS" 0 5
SCHEDULE_SESSION_OPEN=$(cfg SCHEDULE_SESSION_OPEN '30 8 * * 1-5')
SCHEDULE_SESSION_HOURLY=$(cfg SCHEDULE_SESSION_HOURLY '0 9-15 * * 1-5')
SCHEDULE_SYMBOLS=$(cfg SCHEDULE_SYMBOLS '15 8 * * *')
SCHEDULE_RECONCILE=$(cfg SCHEDULE_RECONCILE '* 9-15 * * 1-5')
SCHEDULE_HEALTH=$(cfg SCHEDULE_HEALTH '*/30 * * * *')

VPC_NETWORK=$(cfg VPC_NETWORK tvf-vpc)
VPC_SUBNET=$(cfg VPC_SUBNET tvf-egress-subnet)
VPC_SUBNET_RANGE=$(cfg VPC_SUBNET_RANGE 10.8.0.0/28)   # a connector needs its own /28
VPC_ROUTER=$(cfg VPC_ROUTER tvf-router)
VPC_NAT=$(cfg VPC_NAT tvf-nat)
STATIC_IP_NAME=$(cfg STATIC_IP_NAME tvf-egress-ip)
VPC_CONNECTOR=$(cfg VPC_CONNECTOR tvf-connector)
CONNECTOR_MACHINE_TYPE=$(cfg CONNECTOR_MACHINE_TYPE e2-micro)
CONNECTOR_MIN_INSTANCES=$(cfg CONNECTOR_MIN_INSTANCES 2)
CONNECTOR_MAX_INSTANCES=$(cfg CONNECTOR_MAX_INSTANCES 3)
need_int CONNECTOR_MIN_INSTANCES "$CONNECTOR_MIN_INSTANCES" 2 9
need_int CONNECTOR_MAX_INSTANCES "$CONNECTOR_MAX_INSTANCES" $((CONNECTOR_MIN_INSTANCES + 1)) 10

# Per function: memory, cpu, timeout (s), concurrency. Concurrency above 1 needs a whole CPU.
declare -A RES=()
set_resources() { # PREFIX MEMORY CPU TIMEOUT CONCURRENCY MAX_TIMEOUT
  local p=$1 cpu concurrency timeout
  RES[$p.memory]=$(cfg "${p}_MEMORY" "$2")
  cpu=$(cfg "${p}_CPU" "$3")
  timeout=$(cfg "${p}_TIMEOUT" "$4")
  concurrency=$(cfg "${p}_CONCURRENCY" "$5")
  [[ ${RES[$p.memory]} =~ ^[0-9]+(Mi|Gi)$ ]] || die "${p}_MEMORY must look like 512Mi or 1Gi"
  [[ $cpu =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "${p}_CPU must be a number"
  need_int "${p}_TIMEOUT" "$timeout" 1 "$6"
  need_int "${p}_CONCURRENCY" "$concurrency" 1 1000
  if ((concurrency > 1)) && ! [[ $cpu =~ ^[1-9][0-9]*(\.[0-9]+)?$ ]]; then
    die "${p}_CONCURRENCY > 1 needs ${p}_CPU >= 1"
  fi
  RES[$p.cpu]=$cpu
  RES[$p.timeout]=$timeout
  RES[$p.concurrency]=$concurrency
}
set_resources WEBHOOK 512Mi 1 30 8 3600
# The worker (docs/deploy.md, "The order worker's shape"): one instance, whose in-process
# pacer is then the account's; 200 deliveries in it at once, since no more orders than
# Fyers' 200 a minute can be placed within the 60 s an order may wait (a delivery beyond
# that is answered 429 and retried by Pub/Sub); 180 s covers the longest wait in it: 60 s
# for a broker slot, 20 s for an unclear placement to land, the book reads and Firestore.
set_resources WORKER 512Mi 1 180 200 540   # event-triggered: 540 s at most
WORKER_MAX_INSTANCES=1
# Pub/Sub waits this long for the worker's answer: past the timeout, so that Cloud Run's own
# 504, not Pub/Sub's clock, ends a delivery that runs too long, and never while it still runs.
WORKER_ACK_DEADLINE=$((${RES[WORKER.timeout]} + 10))
((WORKER_ACK_DEADLINE <= 600)) || WORKER_ACK_DEADLINE=600   # Pub/Sub's maximum
set_resources SCHEDULER 1Gi 1 540 1 3600
set_resources AUTH 256Mi 0.167 60 1 3600
WEBHOOK_MIN_INSTANCES=$(cfg WEBHOOK_MIN_INSTANCES 1)   # TradingView gives up after 3 s
WEBHOOK_MAX_INSTANCES=$(cfg WEBHOOK_MAX_INSTANCES 10)
SCHEDULER_MAX_INSTANCES=$(cfg SCHEDULER_MAX_INSTANCES 3)
AUTH_MAX_INSTANCES=$(cfg AUTH_MAX_INSTANCES 2)
need_int WEBHOOK_MIN_INSTANCES "$WEBHOOK_MIN_INSTANCES" 0 100
need_int WEBHOOK_MAX_INSTANCES "$WEBHOOK_MAX_INSTANCES" "$((WEBHOOK_MIN_INSTANCES > 1 ? WEBHOOK_MIN_INSTANCES : 1))" 1000
need_int SCHEDULER_MAX_INSTANCES "$SCHEDULER_MAX_INSTANCES" 1 100
need_int AUTH_MAX_INSTANCES "$AUTH_MAX_INSTANCES" 1 100

if [[ ! -f $SOURCE_DIR/main.py || ! -f $SOURCE_DIR/.gcloudignore ]]; then
  # Without .gcloudignore the upload would include .venv/ and tests/.
  msg="$SOURCE_DIR needs main.py and a .gcloudignore (excluding .venv/, tests/) to deploy"
  if ((DRY_RUN)); then say "warning: $msg"; else die "$msg"; fi
fi

command -v gcloud >/dev/null || die "gcloud not found on PATH (install the Google Cloud CLI)"
export CLOUDSDK_CORE_DISABLE_PROMPTS=1   # never wait for an answer nobody will type

sa_email() { printf '%s@%s.iam.gserviceaccount.com' "$1" "$PROJECT"; }
SA_WEBHOOK=$(sa_email tvf-webhook)
SA_WORKER=$(sa_email tvf-worker)
SA_SCHEDULER=$(sa_email tvf-scheduler)
SA_AUTH=$(sa_email tvf-auth)
SA_INVOKER=$(sa_email tvf-invoker)
SA_BUILD=$(sa_email tvf-build)
# The deployed functions, in deploy order, and the account each runs as.
FUNCTIONS=(webhook order-worker scheduler auth)
declare -A FUNCTION_SA=([webhook]=$SA_WEBHOOK [order-worker]=$SA_WORKER [scheduler]=$SA_SCHEDULER [auth]=$SA_AUTH)
for function in "${!READS[@]}" "${!WRITES[@]}" "${!MOUNTS[@]}"; do
  [[ -n ${FUNCTION_SA[$function]:-} ]] || die "common/secret_table.py names a function this script does not deploy: $function"
done

# --- running gcloud ----------------------------------------------------------------------
ERR_FILE=$(mktemp)
trap 'rm -f "$ERR_FILE"' EXIT
QUERY_OUT=""

# query ARGS...: a read-only gcloud call (run in dry runs too). Sets QUERY_OUT; returns 0
# when the resource exists, 1 when gcloud says it does not; any other failure is fatal
# (in a dry run, where APIs may still be disabled, it counts as "missing"). With
# --assume-empty nothing is looked up: everything is missing.
query() {
  local rc=0 err
  QUERY_OUT=""
  ((ASSUME_EMPTY)) && return 1
  QUERY_OUT=$(gcloud "$@" --project="$PROJECT" 2>"$ERR_FILE") || rc=$?
  ((rc == 0)) && return 0
  err=$(<"$ERR_FILE")
  # A bare 404 only when no digit touches it: project numbers are all digits.
  if grep -qiE 'not[ _]found|does not exist|(^|[^0-9])404([^0-9]|$)' <<<"$err"; then return 1; fi
  if ((DRY_RUN)); then
    say "warning: lookup failed, assuming missing: gcloud $(shell_quote "$@"): ${err##*$'\n'}"
    return 1
  fi
  die "lookup failed: gcloud $(shell_quote "$@"): $err"
}

echo_line() { printf 'gcloud %s' "$(shell_quote "$@" "--project=$PROJECT")"; }

# mutate ARGS...: a gcloud call that changes something; echoed, and run unless dry.
mutate() {
  local line
  line=$(echo_line "$@")
  if ((DRY_RUN)); then
    printf 'DRY-RUN: %s\n' "$line"
    return 0
  fi
  printf 'RUN: %s\n' "$line"
  gcloud "$@" --project="$PROJECT" >&2 || die "failed: $line"
}

# mutate_retrying WHY ARGS...: like mutate, tried for a minute, for resources that take
# a moment to be usable after their creation (WHY says which).
mutate_retrying() {
  local why=$1 attempt line
  shift
  line=$(echo_line "$@")
  if ((DRY_RUN)); then
    printf 'DRY-RUN: %s\n' "$line"
    return 0
  fi
  printf 'RUN: %s\n' "$line"
  for attempt in 1 2 3 4 5 6; do
    if gcloud "$@" --project="$PROJECT" >&2; then return 0; fi
    if ((attempt < 6)); then
      say "retrying in 10 s ($why)"
      sleep 10
    fi
  done
  die "failed: $line"
}
NEW_ACCOUNT="a new service account takes a moment to reach IAM"
NEW_DATABASE="a new Firestore database takes a moment to accept TTL and index changes"

# ensure DESCRIBE-ARGS... :: CREATE-ARGS...: creates the resource if the describe says
# it does not exist.
ensure() {
  local describe=()
  while [[ $1 != "::" ]]; do
    describe+=("$1")
    shift
  done
  shift
  if query "${describe[@]}" --format=none; then
    say "ok, exists: gcloud ${describe[*]}"
  else
    mutate "$@"
  fi
}

# listed LIST-ARGS...: what a gcloud list prints with the given --format, one per line.
listed() {
  if query "$@"; then printf '%s' "$QUERY_OUT"; fi
}

has_line() { grep -qxF -- "$1" <<<"$2"; }

declare -A POLICY=()   # "kind resource" -> "role<TAB>member" lines already granted
# grant KIND RESOURCE ROLE MEMBER: adds the binding unless the policy already has it.
grant() {
  local kind=$1 resource=$2 role=$3 member=$4 key="$1 $2"
  local -a group target
  case $kind in
    project) group=(projects) target=("$resource") ;;
    topic) group=(pubsub topics) target=("$resource") ;;
    subscription) group=(pubsub subscriptions) target=("$resource") ;;
    secret) group=(secrets) target=("$resource") ;;
    bucket) group=(storage buckets) target=("gs://$resource") ;;
    function) group=(run services) target=("$resource" --region="$REGION") ;;
    *) die "grant: unknown kind $kind" ;;
  esac
  if [[ -z ${POLICY[$key]+set} ]]; then
    POLICY[$key]=""
    if [[ $resource != '<'* ]] && query "${group[@]}" get-iam-policy "${target[@]}" \
      --flatten='bindings[].members' --format='value(bindings.role,bindings.members)'; then
      POLICY[$key]=$QUERY_OUT
    fi
  fi
  if grep -qxF "$role"$'\t'"$member" <<<"${POLICY[$key]}"; then return 0; fi
  case $kind in
    project) mutate_retrying "$NEW_ACCOUNT" projects add-iam-policy-binding "$resource" --member="$member" --role="$role" --condition=None ;;
    function) mutate_retrying "$NEW_ACCOUNT" functions add-invoker-policy-binding "$resource" --region="$REGION" --member="$member" ;;
    *) mutate_retrying "$NEW_ACCOUNT" "${group[@]}" add-iam-policy-binding "${target[@]}" --member="$member" --role="$role" ;;
  esac
  POLICY[$key]+=$'\n'"$role"$'\t'"$member"
}

# The function's URL (https://REGION-PROJECT.cloudfunctions.net/NAME), known before the
# first deploy; the one gcloud reports wins once the function exists.
function_url() {
  if query functions describe "$1" --region="$REGION" --format='value(url)' && [[ -n $QUERY_OUT ]]; then
    printf '%s' "$QUERY_OUT"
  else
    printf 'https://%s-%s.cloudfunctions.net/%s' "$REGION" "$PROJECT" "$1"
  fi
}

join_by() { # SEPARATOR-CHARACTER ITEMS...
  local IFS=$1
  shift
  printf '%s' "$*"
}

# ===== 1. can we look things up? ==========================================================
MODE=""
((DRY_RUN)) && MODE=" (dry run: nothing was changed)"
if ((ASSUME_EMPTY)); then
  printf '# DRY RUN FOR AN EMPTY PROJECT (--assume-empty): nothing was looked up, every resource is planned as new.\n'
  say "== project $PROJECT, region $REGION, assumed empty$MODE"
  PROJECT_NUMBER='<project-number>'
else
  say "== project $PROJECT, region $REGION$MODE"
  probe_rc=0
  PROJECT_NUMBER=$(gcloud projects describe "$PROJECT" --format='value(projectNumber)' --project="$PROJECT" 2>"$ERR_FILE") || probe_rc=$?
  if ((probe_rc)) || [[ -z $PROJECT_NUMBER ]]; then
    reason=$(grep -m1 -v '^[[:space:]]*$' "$ERR_FILE" || true)
    if ((DRY_RUN)); then
      # A plan made without lookups would list everything as new: say so instead.
      printf '# DRY RUN FAILED: cannot look anything up in project %s, so there is no plan.\n' "$PROJECT"
      printf '# gcloud said: %s\n' "$reason"
      printf '# Log in (gcloud auth login) and retry, or add --assume-empty for the plan of an empty project.\n'
      exit 2
    fi
    die "project $PROJECT not found, or you cannot see it (gcloud auth login?): $reason"
  fi
fi
PUBSUB_AGENT="serviceAccount:service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"
ENABLED_APIS=""
if query services list --enabled --format='value(config.name)'; then ENABLED_APIS=$QUERY_OUT; fi

# ===== 2. secret values, before anything changes ==========================================
declare -A SECRET_EXISTS=() HAS_VALUE=() SECRET_VALUE=()
if has_line secretmanager.googleapis.com "$ENABLED_APIS"; then
  SECRET_LIST=$(listed secrets list --format='value(name.basename())')
  while read -r secret; do
    [[ -n $secret ]] && SECRET_EXISTS[$secret]=1
  done <<<"$SECRET_LIST"
  for secret in "${OPERATOR_SECRETS[@]}"; do
    [[ -n ${SECRET_EXISTS[$secret]:-} ]] || continue
    # Lists version names only; values are never read.
    if query secrets versions list "$secret" --filter=state:ENABLED --limit=1 --format='value(name)' && [[ -n $QUERY_OUT ]]; then
      HAS_VALUE[$secret]=1
    fi
  done
fi
has_or_gets_value() { [[ -n ${HAS_VALUE[$1]:-} || -n ${SECRET_VALUE[$1]:-} ]]; }

# NAME=VALUE lines; a value is everything after the first '=', kept as is. No line is
# ever printed: it holds a value.
read_secrets_file() {
  local file=$1 line name n=0
  [[ $file == - ]] && file=/dev/stdin
  [[ -r $file ]] || die "secrets file not readable: $file"
  while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    line=${line%$'\r'}
    [[ $line =~ ^[[:space:]]*(#.*)?$ ]] && continue
    name=${line%%=*}
    if [[ $line != *=* ]] || ! in_list "$name" "${OPERATOR_SECRETS[@]}"; then
      die "$1:$n: expected NAME=VALUE, NAME one of ${OPERATOR_SECRETS[*]}"
    fi
    if [[ -n ${HAS_VALUE[$name]:-} ]]; then
      say "ok, has a value: $name (the file's value is not used; add a version to change it)"
    elif [[ -n ${line#*=} ]]; then
      SECRET_VALUE[$name]=${line#*=}
    fi
  done <"$file"
}

# Asks for each value still missing; read -s: nothing is echoed.
ask_secrets() {
  local secret need value
  say "Secrets without a value: type or paste each one (nothing is shown); Enter skips it."
  for secret in "${OPERATOR_SECRETS[@]}"; do
    has_or_gets_value "$secret" && continue
    need=optional
    [[ -n ${REQUIRED[$secret]:-} ]] && need=required
    value=""
    IFS= read -rs -p "  $secret ($need): " value || true
    printf '\n' >&2
    if [[ -n $value ]]; then SECRET_VALUE[$secret]=$value; fi
  done
}

if [[ -n $SECRETS_FILE ]]; then
  read_secrets_file "$SECRETS_FILE"
elif ((!DRY_RUN)) && [[ -t 0 ]]; then
  ask_secrets
fi

# A deploy that mounts a secret without a value fails (Cloud Run cannot start the revision):
# a required mounted secret must have one before anything is changed.
ALL_MOUNTS=" ${MOUNTS[*]} "
BLOCKING=()
for secret in "${SECRETS[@]}"; do
  if [[ -n ${REQUIRED[$secret]:-} && $ALL_MOUNTS == *" $secret "* ]] && ! has_or_gets_value "$secret"; then
    BLOCKING+=("$secret")
  fi
done
if ((${#BLOCKING[@]})); then
  if ((DRY_RUN)); then
    printf '# NOTE: a real run first needs a value for %s: it asks for it in a terminal, or takes --secrets-file.\n' "${BLOCKING[*]}"
  else
    say "deploy.sh: ${BLOCKING[*]} has no value, and a function cannot be deployed with it before it has one."
    say "Nothing was changed. Re-run in a terminal (it asks for the value), or with --secrets-file FILE"
    say "(NAME=VALUE lines, '-' for standard input), or run these first, pasting the value and pressing Enter:"
    has_line secretmanager.googleapis.com "$ENABLED_APIS" ||
      printf '  gcloud services enable secretmanager.googleapis.com --project=%s\n' "$PROJECT"
    for secret in "${BLOCKING[@]}"; do
      [[ -n ${SECRET_EXISTS[$secret]:-} ]] ||
        printf '  gcloud secrets create %s --replication-policy=automatic --project=%s\n' "$secret" "$PROJECT"
      # shellcheck disable=SC2016 # "$V" is for the operator's shell, not expanded here
      printf '  read -rs V && printf %%s "$V" | gcloud secrets versions add %s --data-file=- --project=%s; unset V\n' \
        "$secret" "$PROJECT"
    done
    exit 1
  fi
fi

# ===== 3. APIs ===========================================================================
missing_apis=()
for api in "${APIS[@]}"; do
  has_line "$api.googleapis.com" "$ENABLED_APIS" || missing_apis+=("$api.googleapis.com")
done
if ((${#missing_apis[@]})); then mutate services enable "${missing_apis[@]}"; else say "ok: APIs enabled"; fi

# ===== 4. Firestore ===================================================================
FIRESTORE_IS_NEW=0
if query firestore databases describe --database="$FIRESTORE_DB" --format=none; then
  say "ok, exists: Firestore database $FIRESTORE_DB"
else
  mutate firestore databases create --database="$FIRESTORE_DB" --location="$REGION" --type=firestore-native
  FIRESTORE_IS_NEW=1
fi
# Right after its creation the database may refuse these for a moment: retried then.
firestore_change() {
  if ((FIRESTORE_IS_NEW)); then mutate_retrying "$NEW_DATABASE" "$@"; else mutate "$@"; fi
}

TTL_FIELDS=""
if query firestore fields ttls list --database="$FIRESTORE_DB" --format='value(name)'; then TTL_FIELDS=$QUERY_OUT; fi
for collection in "${TTL_COLLECTIONS[@]}"; do
  if grep -qE "/collectionGroups/$collection/fields/expire_at\$" <<<"$TTL_FIELDS"; then
    say "ok: TTL $collection.expire_at"
  else
    # Documents are deleted within about 24 h of expire_at; the code checks expiry itself.
    firestore_change firestore fields ttls update expire_at --collection-group="$collection" --database="$FIRESTORE_DB" --enable-ttl --async
  fi
done

INDEXES=""
if query firestore indexes composite list --database="$FIRESTORE_DB" \
  --format="value[separator=' '](name.segment(-3),fields.map().extract(fieldPath,order).flatten())"; then
  INDEXES=$QUERY_OUT
fi
# "collection field,ORDER,field,ORDER": the reconcile and health queries.
for spec in "orders status,ASCENDING,created_at,ASCENDING" "orders created_day,ASCENDING,status,ASCENDING"; do
  collection=${spec%% *} fields=${spec#* }
  if grep -qE "^$collection $fields(,|\$)" <<<"$INDEXES"; then
    say "ok: index $spec"
  else
    field_configs=()
    IFS=, read -r -a parts <<<"$fields"
    for ((i = 0; i < ${#parts[@]}; i += 2)); do
      field_configs+=("--field-config=field-path=${parts[i]},order=${parts[i + 1],,}")
    done
    firestore_change firestore indexes composite create --database="$FIRESTORE_DB" --collection-group="$collection" \
      --query-scope=COLLECTION "${field_configs[@]}" --async
  fi
done

# ===== 5. bucket, topics, subscriptions, secrets, service accounts =====================
ensure storage buckets describe "gs://$ARTIFACT_BUCKET" \
  :: storage buckets create "gs://$ARTIFACT_BUCKET" --location="$REGION" --uniform-bucket-level-access --public-access-prevention

# Kinds with several resources are listed once rather than described one by one.
TOPICS=$(listed pubsub topics list --format='value(name.basename())')
for topic in "$ORDERS_TOPIC" "$DLQ_TOPIC" "$NOTIFICATIONS_TOPIC"; do
  if has_line "$topic" "$TOPICS"; then say "ok, exists: topic $topic"; else mutate pubsub topics create "$topic"; fi
done
# Pull subscriptions keep dead letters and notifications for inspection; without
# --expiration-period=never an unread subscription is deleted after 31 days.
SUBSCRIPTIONS=$(listed pubsub subscriptions list --format='value(name.basename())')
for pair in "$DLQ_PULL_SUBSCRIPTION:$DLQ_TOPIC" "$NOTIFICATIONS_PULL_SUBSCRIPTION:$NOTIFICATIONS_TOPIC"; do
  if has_line "${pair%%:*}" "$SUBSCRIPTIONS"; then
    say "ok, exists: subscription ${pair%%:*}"
  else
    mutate pubsub subscriptions create "${pair%%:*}" --topic="${pair#*:}" \
      --message-retention-duration=7d --expiration-period=never
  fi
done

for secret in "${SECRETS[@]}"; do
  if [[ -n ${SECRET_EXISTS[$secret]:-} ]]; then
    say "ok, exists: secret $secret"
  else
    mutate secrets create "$secret" --replication-policy=automatic
  fi
  [[ -n ${SECRET_VALUE[$secret]:-} ]] || continue
  # The value goes to gcloud's standard input: never on a command line, never echoed.
  line=$(echo_line secrets versions add "$secret" --data-file=-)
  if ((DRY_RUN)); then
    printf 'DRY-RUN: %s\n' "$line"
  else
    printf 'RUN: %s\n' "$line"
    printf '%s' "${SECRET_VALUE[$secret]}" | gcloud secrets versions add "$secret" --data-file=- --project="$PROJECT" >&2 ||
      die "failed: $line"
  fi
  HAS_VALUE[$secret]=1
  unset "SECRET_VALUE[$secret]"
done

ACCOUNTS=$(listed iam service-accounts list --format='value(email)')
for account in tvf-webhook:"order router webhook" tvf-worker:"order router worker" \
  tvf-scheduler:"order router scheduler" tvf-auth:"order router daily login" \
  tvf-invoker:"Cloud Scheduler caller of the scheduler function" tvf-build:"Cloud Functions builds of the order router"; do
  name=${account%%:*}
  if has_line "$(sa_email "$name")" "$ACCOUNTS"; then
    say "ok, exists: service account $name"
  else
    mutate iam service-accounts create "$name" --display-name="${account#*:}"
  fi
done

# ===== 6. IAM, per resource wherever gcloud allows it ===================================
for sa in "$SA_WEBHOOK" "$SA_WORKER" "$SA_SCHEDULER" "$SA_AUTH"; do
  grant project "$PROJECT" roles/datastore.user "serviceAccount:$sa"   # Firestore has no per-collection IAM
done
# The build's buckets and image repository are created by the first deploy: project roles.
for role in "${BUILD_ROLES[@]}"; do grant project "$PROJECT" "$role" "serviceAccount:$SA_BUILD"; done
grant topic "$ORDERS_TOPIC" roles/pubsub.publisher "serviceAccount:$SA_WEBHOOK"
for sa in "$SA_WORKER" "$SA_SCHEDULER" "$SA_AUTH"; do
  grant topic "$NOTIFICATIONS_TOPIC" roles/pubsub.publisher "serviceAccount:$sa"
done
# Secrets, as common/secret_table.py says. secretVersionManager: add a version, then
# disable the older ones (SecretManagerStore.put).
for function in "${FUNCTIONS[@]}"; do
  read -r -a names <<<"${READS[$function]:-}"
  for secret in "${names[@]}"; do
    grant secret "$secret" roles/secretmanager.secretAccessor "serviceAccount:${FUNCTION_SA[$function]}"
  done
  read -r -a names <<<"${WRITES[$function]:-}"
  for secret in "${names[@]}"; do
    grant secret "$secret" roles/secretmanager.secretVersionManager "serviceAccount:${FUNCTION_SA[$function]}"
  done
done
grant bucket "$ARTIFACT_BUCKET" roles/storage.objectViewer "serviceAccount:$SA_WORKER"
grant bucket "$ARTIFACT_BUCKET" roles/storage.objectAdmin "serviceAccount:$SA_SCHEDULER"
# Dead-lettering: Pub/Sub's own service agent republishes to the DLQ topic.
grant topic "$DLQ_TOPIC" roles/pubsub.publisher "$PUBSUB_AGENT"

# ===== 7. static egress IP: VPC, /28 subnet, router, reserved IP, Cloud NAT, connector ===
# gcloud 528's `functions deploy` has no Direct VPC egress flags (--network/--subnet), so
# the Fyers-calling functions go out through a Serverless VPC Access connector whose
# subnet is NATed to the reserved address (all traffic: --egress-settings=all).
# Private Google Access keeps their Google API calls off the NAT.
ensure compute networks describe "$VPC_NETWORK" \
  :: compute networks create "$VPC_NETWORK" --subnet-mode=custom
if query compute networks subnets describe "$VPC_SUBNET" --region="$REGION" --format='value(privateIpGoogleAccess)'; then
  if [[ $QUERY_OUT == True ]]; then
    say "ok, exists with Private Google Access: subnet $VPC_SUBNET"
  else
    mutate compute networks subnets update "$VPC_SUBNET" --region="$REGION" --enable-private-ip-google-access
  fi
else
  mutate compute networks subnets create "$VPC_SUBNET" --network="$VPC_NETWORK" --region="$REGION" \
    --range="$VPC_SUBNET_RANGE" --enable-private-ip-google-access
fi
ensure compute routers describe "$VPC_ROUTER" --region="$REGION" \
  :: compute routers create "$VPC_ROUTER" --network="$VPC_NETWORK" --region="$REGION"
ensure compute addresses describe "$STATIC_IP_NAME" --region="$REGION" \
  :: compute addresses create "$STATIC_IP_NAME" --region="$REGION"
ensure compute routers nats describe "$VPC_NAT" --router="$VPC_ROUTER" --region="$REGION" \
  :: compute routers nats create "$VPC_NAT" --router="$VPC_ROUTER" --region="$REGION" \
  --nat-external-ip-pool="$STATIC_IP_NAME" --nat-custom-subnet-ip-ranges="$VPC_SUBNET"
ensure compute networks vpc-access connectors describe "$VPC_CONNECTOR" --region="$REGION" \
  :: compute networks vpc-access connectors create "$VPC_CONNECTOR" --region="$REGION" --subnet="$VPC_SUBNET" \
  --machine-type="$CONNECTOR_MACHINE_TYPE" --min-instances="$CONNECTOR_MIN_INSTANCES" --max-instances="$CONNECTOR_MAX_INSTANCES"

# An existing NAT must send the connector's traffic out through the whitelisted address
# and no other, or Fyers refuses some orders: its address list must be exactly that
# address, and its subnets must include the connector's.
CONNECTOR_SUBNET=$VPC_SUBNET
if query compute networks vpc-access connectors describe "$VPC_CONNECTOR" --region="$REGION" \
  --format='value(subnet.name)' && [[ -n $QUERY_OUT ]]; then
  CONNECTOR_SUBNET=$QUERY_OUT
fi
if query compute routers nats describe "$VPC_NAT" --router="$VPC_ROUTER" --region="$REGION" \
  --format='value(natIpAllocateOption,natIps,sourceSubnetworkIpRangesToNat,subnetworks[].name)'; then
  # '|' for the tabs: read would merge consecutive tabs, and an empty field would shift.
  IFS='|' read -r allocation nat_ips ranges nat_subnets <<<"${QUERY_OUT//$'\t'/|}"
  fix=()
  if [[ $allocation != MANUAL_ONLY || $nat_ips != */"projects/$PROJECT/regions/$REGION/addresses/$STATIC_IP_NAME" ||
    $nat_ips == *";"* ]]; then
    fix+=(--nat-external-ip-pool="$STATIC_IP_NAME")
    say "Cloud NAT $VPC_NAT egresses through '${nat_ips:-no address}' ($allocation), not through $STATIC_IP_NAME alone"
  fi
  if [[ $ranges != ALL_SUBNETWORKS_* ]]; then
    covered=()
    IFS=';' read -r -a listed_subnets <<<"$nat_subnets"
    for subnet in "${listed_subnets[@]}"; do covered+=("${subnet##*/}"); done
    if ! in_list "$CONNECTOR_SUBNET" "${covered[@]}"; then
      fix+=(--nat-custom-subnet-ip-ranges="$(join_by , "${covered[@]}" "$CONNECTOR_SUBNET")")
      say "Cloud NAT $VPC_NAT does not cover the connector's subnet $CONNECTOR_SUBNET"
    fi
  fi
  if ((${#fix[@]})); then
    die "fix Cloud NAT $VPC_NAT, then re-run: $(echo_line compute routers nats update "$VPC_NAT" --router="$VPC_ROUTER" --region="$REGION" "${fix[@]}")"
  fi
  say "ok: Cloud NAT $VPC_NAT sends $CONNECTOR_SUBNET out through $STATIC_IP_NAME only"
fi
STATIC_IP='<reserved on the first real run>'
if query compute addresses describe "$STATIC_IP_NAME" --region="$REGION" --format='value(address)' && [[ -n $QUERY_OUT ]]; then
  STATIC_IP=$QUERY_OUT
fi
say "static egress IP: $STATIC_IP"

# ===== 8. functions =====================================================================
AUTH_URL=$(function_url auth)
BASE_ENV=(
  "GOOGLE_CLOUD_PROJECT=$PROJECT"
  SECRET_BACKEND=secretmanager
  ARTIFACT_BACKEND=gcs
  "ARTIFACT_BUCKET=$ARTIFACT_BUCKET"
  "ORDERS_TOPIC=$ORDERS_TOPIC"
  "NOTIFICATIONS_TOPIC=$NOTIFICATIONS_TOPIC"
  "${FORWARDED[@]}"
)
AUTH_ENV=("AUTH_PUBLIC_URL=$AUTH_URL" "AUTH_REDIRECT_URL=$AUTH_URL/callback")
EGRESS=(--vpc-connector="$VPC_CONNECTOR" --egress-settings=all)
BUILD=(--build-service-account="projects/$PROJECT/serviceAccounts/$SA_BUILD")

# deploy_function NAME ENTRY PREFIX auth-urls|- FLAGS...
deploy_function() {
  local name=$1 entry=$2 p=$3 with_auth_urls=$4 secret
  shift 4
  local -a env=("${BASE_ENV[@]}" "THREADS=${RES[$p.concurrency]}") names mounts=() secrets=(--clear-secrets)
  [[ $with_auth_urls == auth-urls ]] && env+=("${AUTH_ENV[@]}")
  local -a resources=(--memory="${RES[$p.memory]}" --cpu="${RES[$p.cpu]}"
    --timeout="${RES[$p.timeout]}s" --concurrency="${RES[$p.concurrency]}")
  # The table's mounts: a required one always (it has a value by now), an optional one
  # once it has a value. The function's secret settings are exactly these.
  read -r -a names <<<"${MOUNTS[$name]:-}"
  for secret in "${names[@]}"; do
    if [[ -n ${REQUIRED[$secret]:-} || -n ${HAS_VALUE[$secret]:-} ]]; then mounts+=("$secret=$secret:latest"); fi
  done
  ((${#mounts[@]} == 0)) || secrets=(--set-secrets="$(join_by , "${mounts[@]}")")
  # --format=none: gcloud would otherwise print the deployed function, env vars included.
  mutate functions deploy "$name" --gen2 --runtime="$RUNTIME" --region="$REGION" --source="$SOURCE_DIR" \
    --entry-point="$entry" --service-account="${FUNCTION_SA[$name]}" "${BUILD[@]}" "$@" "${resources[@]}" \
    "${secrets[@]}" --set-env-vars="^$ENV_DELIMITER^$(join_by "$ENV_DELIMITER" "${env[@]}")" --format=none
}

deploy_function webhook webhook WEBHOOK - \
  --trigger-http --allow-unauthenticated --ingress-settings=all \
  --min-instances="$WEBHOOK_MIN_INSTANCES" --max-instances="$WEBHOOK_MAX_INSTANCES"
# One instance: the broker's rate limits are paced in-process (common/ratelimit.py).
# The Eventarc trigger pushes as the worker's own account (invoker on itself, below);
# Pub/Sub and Eventarc count as internal callers.
deploy_function order-worker order_worker WORKER - \
  --trigger-topic="$ORDERS_TOPIC" --retry --max-instances="$WORKER_MAX_INSTANCES" --ingress-settings=internal-only \
  "${EGRESS[@]}"
# Cloud Scheduler counts as an internal caller too.
deploy_function scheduler scheduler SCHEDULER auth-urls \
  --trigger-http --no-allow-unauthenticated --ingress-settings=internal-only \
  --max-instances="$SCHEDULER_MAX_INSTANCES" "${EGRESS[@]}"
# Public: the login page and the Fyers redirect; the code checks OPERATOR_KEY.
deploy_function auth auth AUTH auth-urls \
  --trigger-http --allow-unauthenticated --ingress-settings=all \
  --max-instances="$AUTH_MAX_INSTANCES" "${EGRESS[@]}"

grant function scheduler roles/run.invoker "serviceAccount:$SA_INVOKER"
grant function order-worker roles/run.invoker "serviceAccount:$SA_WORKER"

# ===== 9. dead letters and ack deadline on the worker's trigger subscription =============
# `functions deploy` has no dead-letter or ack-deadline flag: the subscription behind the
# worker's Eventarc trigger gets them, found through the trigger itself. Checked on every
# run, since a redeploy may reset them.
WORKER_SUBSCRIPTION='<order-worker-trigger-subscription>'
if query functions describe order-worker --region="$REGION" --format='value(eventTrigger.trigger.basename())' &&
  [[ -n $QUERY_OUT ]] &&
  query eventarc triggers describe "$QUERY_OUT" --location="$REGION" \
    --format='value(transport.pubsub.subscription.basename())' && [[ -n $QUERY_OUT ]]; then
  WORKER_SUBSCRIPTION=$QUERY_OUT
elif ((!DRY_RUN)); then
  die "order-worker's Eventarc trigger names no Pub/Sub subscription (did its deploy fail?)"
fi

grant subscription "$WORKER_SUBSCRIPTION" roles/pubsub.subscriber "$PUBSUB_AGENT"
want="projects/$PROJECT/topics/$DLQ_TOPIC"$'\t'"$MAX_DELIVERY_ATTEMPTS"$'\t'"${MIN_RETRY_DELAY}s"$'\t'"${MAX_RETRY_DELAY}s"$'\t'"$WORKER_ACK_DEADLINE"
have=""
if [[ $WORKER_SUBSCRIPTION != '<'* ]] && query pubsub subscriptions describe "$WORKER_SUBSCRIPTION" \
  --format='value(deadLetterPolicy.deadLetterTopic,deadLetterPolicy.maxDeliveryAttempts,retryPolicy.minimumBackoff,retryPolicy.maximumBackoff,ackDeadlineSeconds)'; then
  have=$QUERY_OUT
fi
if [[ $have == "$want" ]]; then
  say "ok: dead-letter and retry policy, ack deadline on $WORKER_SUBSCRIPTION"
else
  mutate pubsub subscriptions update "$WORKER_SUBSCRIPTION" \
    --dead-letter-topic="projects/$PROJECT/topics/$DLQ_TOPIC" --max-delivery-attempts="$MAX_DELIVERY_ATTEMPTS" \
    --min-retry-delay="${MIN_RETRY_DELAY}s" --max-retry-delay="${MAX_RETRY_DELAY}s" --ack-deadline="$WORKER_ACK_DEADLINE"
fi

# ===== 10. Cloud Scheduler jobs ==========================================================
# The job calls the function's run.app URI; the OIDC audience is that URI without the query.
SCHEDULER_URI='https://<scheduler-function-uri>'
if query functions describe scheduler --region="$REGION" --format='value(serviceConfig.uri)' && [[ -n $QUERY_OUT ]]; then
  SCHEDULER_URI=$QUERY_OUT
elif ((!DRY_RUN)); then
  die "the scheduler function has no URI after its deploy"
fi
# Cloud Scheduler waits 15 s to 30 min for an HTTP target.
ATTEMPT_DEADLINE=${RES[SCHEDULER.timeout]}
((ATTEMPT_DEADLINE <= 1800)) || ATTEMPT_DEADLINE=1800
((ATTEMPT_DEADLINE >= 15)) || ATTEMPT_DEADLINE=15

JOBS=$(listed scheduler jobs list --location="$SCHEDULER_LOCATION" --format='value(name.basename())')
for job in "session-open|session|$SCHEDULE_SESSION_OPEN" "session-hourly|session|$SCHEDULE_SESSION_HOURLY" \
  "symbols|symbols|$SCHEDULE_SYMBOLS" "reconcile|reconcile|$SCHEDULE_RECONCILE" "health|health|$SCHEDULE_HEALTH"; do
  IFS='|' read -r suffix name schedule <<<"$job"
  flags=(--location="$SCHEDULER_LOCATION" --schedule="$schedule" --time-zone="$TIME_ZONE"
    --uri="$SCHEDULER_URI?job=$name" --http-method=POST
    --oidc-service-account-email="$SA_INVOKER" --oidc-token-audience="$SCHEDULER_URI"
    --attempt-deadline="${ATTEMPT_DEADLINE}s" --max-retry-attempts="$JOB_MAX_RETRY_ATTEMPTS" "${JOB_RETRY[@]}"
    --description="order router: $name")
  if has_line "tvf-$suffix" "$JOBS"; then
    mutate scheduler jobs update http "tvf-$suffix" "${flags[@]}"
  else
    mutate scheduler jobs create http "tvf-$suffix" "${flags[@]}"
  fi
done

# ===== 11. what the trader needs next ====================================================
WEBHOOK_URL=$(function_url webhook)
AUTH_URL=$(function_url auth)
TEMPLATE_SYMBOL=$(cfg ALLOWED_SYMBOLS NIFTY)
TEMPLATE_SYMBOL=${TEMPLATE_SYMBOL%%,*}
TEMPLATE_SYMBOL=${TEMPLATE_SYMBOL// /}
TEMPLATE_SYMBOL=${TEMPLATE_SYMBOL^^}

cat <<SUMMARY

==== TradingView -> Fyers order router$MODE ====
Webhook URL (TradingView alert > Notifications > Webhook URL):
  $WEBHOOK_URL
Daily login URL (open it each trading morning, before the market opens):
  $AUTH_URL/login
Fyers app redirect URI:
  $AUTH_URL/callback
Static egress IP (whitelist it in your Fyers app):
  $STATIC_IP

TradingView alert message (paste as the alert's message; replace the secret with your WEBHOOK_SECRET):
{"secret":"<your WEBHOOK_SECRET>","symbol":"$TEMPLATE_SYMBOL","action":"{{strategy.order.action}}","expiry":"WEEKLY","strike":"ATM","optionType":"CE","lots":1,"strategy":"my-strategy","time":"{{timenow}}"}
SUMMARY
empty_secrets=()
later_mounts=()
for secret in "${OPERATOR_SECRETS[@]}"; do
  [[ -n ${HAS_VALUE[$secret]:-} ]] && continue
  empty_secrets+=("$secret")
  [[ $ALL_MOUNTS == *" $secret "* ]] && later_mounts+=("$secret")
done
if ((${#empty_secrets[@]})); then
  # read -rs: nothing echoed, nothing in the shell history, no trailing newline in the value.
  printf '\nSecrets without a value yet (the optional ones only if you use them; see docs/deploy.md).\n'
  printf 'Add each one like this, then paste the value and press Enter:\n'
  for secret in "${empty_secrets[@]}"; do
    # shellcheck disable=SC2016 # "$V" is for the operator's shell, not expanded here
    printf '  read -rs V && printf %%s "$V" | gcloud secrets versions add %s --data-file=- --project=%s; unset V\n' \
      "$secret" "$PROJECT"
  done
  if ((${#later_mounts[@]})); then
    printf 'After adding %s, re-run deploy.sh: the functions get it in their environment at deploy time.\n' \
      "${later_mounts[*]}"
  fi
fi
