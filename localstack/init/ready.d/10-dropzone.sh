#!/usr/bin/env bash
# Creates what an S3 drop zone with event notifications needs:
#   * the bucket (DROPZONE_BUCKET, default "dropzone");
#   * the queue (DROPZONE_QUEUE, default "dropzone-events") and its dead-letter queue;
#   * the bucket notification: s3:ObjectCreated:* under <DROPZONE_PREFIX>/incoming/ -> the queue,
#     with a queue policy that lets S3 send to it (AWS needs it; LocalStack and moto ignore it).
# LocalStack runs it when ready (docker-compose.yml mounts this folder into
# /etc/localstack/init/ready.d). It runs anywhere else too, against any S3/SQS endpoint:
#   AWS_ENDPOINT_URL=http://localhost:4566 localstack/init/ready.d/10-dropzone.sh
# Running it twice changes nothing.
set -euo pipefail

BUCKET="${DROPZONE_BUCKET:-dropzone}"
PREFIX="${DROPZONE_PREFIX:-partners}"
QUEUE="${DROPZONE_QUEUE:-dropzone-events}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
FILTER="${PREFIX:+${PREFIX%/}/}incoming/"

if command -v awslocal >/dev/null 2>&1; then
  aws_() { awslocal "$@"; }  # inside the LocalStack container
else
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
  aws_() { "${AWS_CLI:-aws}" --endpoint-url "${AWS_ENDPOINT_URL:-http://localhost:4566}" "$@"; }
fi

if ! aws_ s3api head-bucket --bucket "$BUCKET" >/dev/null 2>&1; then
  aws_ s3api create-bucket --bucket "$BUCKET" >/dev/null
fi

DLQ_URL="$(aws_ sqs create-queue --queue-name "$QUEUE-dlq" --query QueueUrl --output text)"
DLQ_ARN="$(aws_ sqs get-queue-attributes --queue-url "$DLQ_URL" --attribute-names QueueArn \
  --query Attributes.QueueArn --output text)"
QUEUE_URL="$(aws_ sqs create-queue --queue-name "$QUEUE" --query QueueUrl --output text)"
QUEUE_ARN="$(aws_ sqs get-queue-attributes --queue-url "$QUEUE_URL" --attribute-names QueueArn \
  --query Attributes.QueueArn --output text)"

# Messages dropzone could not finish 10 times end up in the dead-letter queue for a look.
ATTRS="$(mktemp)"
trap 'rm -f "$ATTRS"' EXIT
cat >"$ATTRS" <<JSON
{
  "VisibilityTimeout": "120",
  "RedrivePolicy": "{\"deadLetterTargetArn\":\"$DLQ_ARN\",\"maxReceiveCount\":\"10\"}",
  "Policy": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Principal\":{\"Service\":\"s3.amazonaws.com\"},\"Action\":\"sqs:SendMessage\",\"Resource\":\"$QUEUE_ARN\",\"Condition\":{\"ArnLike\":{\"aws:SourceArn\":\"arn:aws:s3:::$BUCKET\"}}}]}"
}
JSON
aws_ sqs set-queue-attributes --queue-url "$QUEUE_URL" --attributes "file://$ATTRS"

aws_ s3api put-bucket-notification-configuration --bucket "$BUCKET" --notification-configuration "{
  \"QueueConfigurations\": [{
    \"Id\": \"dropzone-incoming\",
    \"QueueArn\": \"$QUEUE_ARN\",
    \"Events\": [\"s3:ObjectCreated:*\"],
    \"Filter\": {\"Key\": {\"FilterRules\": [{\"Name\": \"prefix\", \"Value\": \"$FILTER\"}]}}
  }]
}"

echo "dropzone: zone s3://$BUCKET${PREFIX:+/${PREFIX%/}}  queue $QUEUE_URL"
