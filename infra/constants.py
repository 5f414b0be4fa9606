"""Names shared by the CDK app, the functions' environment and the local runtime."""

from __future__ import annotations

SERVICE_NAME = "lfr"
METRICS_NAMESPACE = "lfr"
DEFAULT_STACK_NAME = "lfr"

# The Lambda runtime pin and the build's asset paths: lambda_target (shared with layers/).

# Function timeouts (s). The match function's sets how soon a crashed batch is retried: SQS
# returns it after the crop queue's visibility timeout, which AWS's guidance puts at >= 6x the
# function timeout (infra/constructs/queues.py). So the timeout is sized to the work of one
# batch, from measured costs, with 2x headroom, and the model is loaded during init (outside it;
# functions/handlers/match.py):
#   worst batch = 5 messages x 3 crops x 18 ms inference (SFace, one core, README "Performance and
#   cost"; 36-70 ms/crop on this shared 2-core machine under load) = 0.27 s
#               + 5 alerts x ~150 ms of writes (record, crop, publish, audit, mark) = 0.75 s
#   -> ~1.0 s; ~x5 headroom (a redelivered batch is processed record by record, and a loaded
#   machine runs 5-10x slower) -> 5 s timeout -> 30 s visibility: a record whose invocation
#   crashed is delivered again within ~30 s (it was 180 s).
MATCH_CROP_INFERENCE_MS = 18
MATCH_ALERT_WRITES_MS = 150
MATCH_TIMEOUT_S = 5
MATCH_MEMORY_MB = 2048
# 5: one model call per batch amortises the per-invocation calls (deployment read, counters,
# metric flush, ~14 ms) over up to 15 crops when the queue has a backlog, while a batch (even
# redelivered, record by record) fits the timeout above, and a crash sends back at most 5
# tracks. Throughput comes from concurrency, not batch size: on 2 cores batching gains nothing
# for inference itself. No batching window: at low rates a window only delays live alerts, and
# under load the queue itself fills the batches (a receive returns every waiting message up to 5).
MATCH_BATCH_SIZE = 5
MATCH_BATCHING_WINDOW_S = 0  # live alerts: never hold crops back to fill a batch
BUILD_TIMEOUT_S = 300
BUILD_MEMORY_MB = 2048
SESSION_TIMEOUT_S = 120
CROP_QUEUE_RETENTION_S = 15 * 60  # a crop older than this is no longer a live alert
# A DLQ keeps a message's original enqueue time, so it must outlast the crop queue to be of
# any use; 20 min is the least that does, and a session purge empties it of its deployment.
CROP_DLQ_RETENTION_S = 20 * 60
# AWS's guidance for Lambda consumers is >= 5. A crash returns a whole batch with every receive
# count grown; the match function then isolates redelivered records (functions/logic/sqs_batch.py),
# which clears a poison record's neighbours within two more deliveries, and the rest is margin for
# unrelated crashes. A poison record reaches the DLQ after 5 deliveries, ~2.5 min at 30 s.
CROP_MAX_RECEIVE_COUNT = 5

ALERT_RETENTION_DAYS = 31
# A deployment may shorten (never lengthen) alert retention to one of these day counts; each
# has an S3 lifecycle rule on the alert crop tag below (S3 lifecycle is per bucket, not per key).
ALERT_RETENTION_CHOICES_DAYS = (1, 2, 3, 7, 14, ALERT_RETENTION_DAYS)
ALERT_RETENTION_TAG = "retention-days"

# Sessions: the longest a deployment may run, and how soon after its end the watchlist must be gone.
MAX_SESSION_DURATION_S = 12 * 60 * 60
PURGE_TARGET_S = 5 * 60

# Audit log: S3 Object Lock retention (COMPLIANCE: not even the account root can shorten or
# delete it). A policy choice; six years follows the usual UK public-sector audit horizon.
AUDIT_LOCK_MODE = "COMPLIANCE"
AUDIT_RETENTION_DAYS = 6 * 365

# Environment variable names: functions/models/env.py, each function's env model (the function factory,
# infra/constructs/lambda_function.py, builds every function's environment from it).

# Officers: the alert page API and its function.
OFFICER_API_TIMEOUT_S = 10
OFFICER_API_MEMORY_MB = 256  # DynamoDB/S3 presign only: no model
OFFICER_API_STAGE = "prod"
OFFICER_API_THROTTLE_RPS = 50  # a few officers per deployment; anything more is abuse
OFFICER_API_THROTTLE_BURST = 100

# CloudFormation outputs the CLI and local runtime read.
OUTPUT_CROP_QUEUE_URL = "CropQueueUrl"
OUTPUT_CROP_DLQ_URL = "CropDlqUrl"
OUTPUT_WATCHLIST_BUCKET = "WatchlistBucketName"
OUTPUT_ALERTS_BUCKET = "AlertsBucketName"
OUTPUT_DEPLOYMENTS_TABLE = "DeploymentsTableName"
OUTPUT_ALERTS_TABLE = "AlertsTableName"
OUTPUT_ALERT_TOPIC_ARN = "AlertTopicArn"
OUTPUT_SESSION_STATE_MACHINE_ARN = "SessionStateMachineArn"
OUTPUT_AUDIT_BUCKET = "AuditBucketName"
OUTPUT_OFFICERS_TABLE = "OfficersTableName"
OUTPUT_OFFICER_API_URL = "OfficerApiUrl"
OUTPUT_SIGNING_SECRET_ARN = "SigningSecretArn"
OUTPUT_OFFICER_USER_POOL_ID = "OfficerUserPoolId"
OUTPUT_OFFICER_USER_POOL_CLIENT_ID = "OfficerUserPoolClientId"

# Alarms (infra/constructs/alarms.py): every alarm's name starts with this (the CLI lists them by it).
ALARM_NAME_PREFIX = "{stack_name}-alarm-"
OUTPUT_ALARM_TOPIC_ARN = "AlarmTopicArn"
# Concurrency (static checks: no function may scale without a cap). Reserved concurrency both caps a
# function and guarantees it that capacity, so a flood of crops cannot starve the session function
# (checks, purges) or the officers' API out of the account's pool. Together they reserve 45, which
# needs an account concurrency limit of at least 145 (Lambda keeps 100 unreserved). A throttled
# Step Functions task fails with Lambda.TooManyRequestsException: the reservations below are sized so
# that it does not happen, and the session machine should retry it like any transient error.
# match: a batch (MATCH_BATCH_SIZE tracks) takes ~1 s warm, so 20 in flight match ~200 tracks/s,
# far above the few cameras of a deployment; the SQS trigger's own cap equals it, so the poller
# never invokes into throttling (a throttled batch would count a receive towards the DLQ).
MATCH_RESERVED_CONCURRENCY = 20
MATCH_MAX_CONCURRENCY = MATCH_RESERVED_CONCURRENCY  # SQS event source ScalingConfig (2..1000)
# build_watchlist: one run per deployment start (up to BUILD_TIMEOUT_S); 5 deployments may start at once.
BUILD_RESERVED_CONCURRENCY = 5
# session: one short call per live deployment every check interval, plus purges that drain queues;
# 10 covers several deployments ending together while others are checked.
SESSION_RESERVED_CONCURRENCY = 10
# officers' API: OFFICER_API_THROTTLE_RPS requests/s of ~0.1 s is ~5 in flight; 10 leaves headroom.
# It also bounds the containers that each keep a failed-access audit window (functions/logic/officer_access.py).
OFFICER_API_RESERVED_CONCURRENCY = 10
# Failed access to the officers' API (metric FailedAccess, namespace METRICS_NAMESPACE): an officer
# with a stale link fails a few times; this many in 5 minutes is someone probing.
FAILED_ACCESS_ALARM_THRESHOLD = 20
FAILED_ACCESS_ALARM_PERIOD_S = 5 * 60
