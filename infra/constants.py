"""Names shared by the CDK app, the functions' environment and the local runtime."""

from __future__ import annotations

SERVICE_NAME = "lfr"
METRICS_NAMESPACE = "lfr"
DEFAULT_STACK_NAME = "lfr"

# Lambda runtime: the layer's native wheels are built for exactly this.
LAMBDA_PYTHON_VERSION = "3.12"
LAMBDA_ARCHITECTURE = "x86_64"
LAMBDA_LAYER_LIMIT_BYTES = 250 * 1024 * 1024  # unzipped function + layers

# Function timeouts (s); queue visibility is ~6x the consumer's timeout.
MATCH_TIMEOUT_S = 30
MATCH_MEMORY_MB = 2048
MATCH_BATCH_SIZE = 10
MATCH_BATCHING_WINDOW_S = 0  # live alerts: never hold crops back to fill a batch
BUILD_TIMEOUT_S = 300
BUILD_MEMORY_MB = 2048
SESSION_TIMEOUT_S = 120
CROP_QUEUE_RETENTION_S = 15 * 60  # a crop older than this is no longer a live alert
CROP_DLQ_RETENTION_S = 60 * 60
CROP_MAX_RECEIVE_COUNT = 3

ALERT_RETENTION_DAYS = 31

# Environment variable names (read by functions/models/env.py).
ENV_DEPLOYMENTS_TABLE = "DEPLOYMENTS_TABLE"
ENV_ALERTS_TABLE = "ALERTS_TABLE"
ENV_IDEMPOTENCY_TABLE = "IDEMPOTENCY_TABLE"
ENV_WATCHLIST_BUCKET = "WATCHLIST_BUCKET"
ENV_ALERTS_BUCKET = "ALERTS_BUCKET"
ENV_ALERT_TOPIC_ARN = "ALERT_TOPIC_ARN"
ENV_MODEL_DIR = "MODEL_DIR"

# CloudFormation outputs the CLI and local runtime read.
OUTPUT_CROP_QUEUE_URL = "CropQueueUrl"
OUTPUT_CROP_DLQ_URL = "CropDlqUrl"
OUTPUT_WATCHLIST_BUCKET = "WatchlistBucketName"
OUTPUT_ALERTS_BUCKET = "AlertsBucketName"
OUTPUT_DEPLOYMENTS_TABLE = "DeploymentsTableName"
OUTPUT_ALERTS_TABLE = "AlertsTableName"
OUTPUT_ALERT_TOPIC_ARN = "AlertTopicArn"
OUTPUT_SESSION_STATE_MACHINE_ARN = "SessionStateMachineArn"
