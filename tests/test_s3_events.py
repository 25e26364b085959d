"""S3 event notifications through SQS: message parsing, holding, acknowledging, redelivery."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import boto3
import pytest
from s3_support import BUCKET, REGION, make_source, notified_queue, queue_depth

from dropzone.sources.s3_events import ObjectEvent, QueueConsumer, parse_message

pytest_plugins = ["s3_fixtures"]


def s3_record(key: str, event: str = "ObjectCreated:Put", bucket: str = BUCKET) -> dict[str, Any]:
    return {
        "eventSource": "aws:s3",
        "eventName": event,
        "s3": {
            "bucket": {"name": bucket},
            "object": {"key": key, "size": 10, "eTag": "abc", "versionId": "v1", "sequencer": "01"},
        },
    }


# -- parsing ------------------------------------------------------------------------------------------


def test_parses_s3_records_with_url_encoded_keys() -> None:
    body = json.dumps({"Records": [s3_record("incoming%2Facme%2Fmy+file%C3%A9.ndjson")]})
    assert parse_message(body) == [ObjectEvent(BUCKET, "incoming/acme/my fileé.ndjson", 10, "abc", "v1")]


def test_test_events_and_removals_carry_nothing_to_do() -> None:
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET}
    assert parse_message(json.dumps(test_event)) == []
    removed = {"Records": [s3_record("incoming/acme/a.ndjson", "ObjectRemoved:Delete")]}
    assert parse_message(json.dumps(removed)) == []


def test_sns_envelope_and_eventbridge_shapes() -> None:
    inner = json.dumps({"Records": [s3_record("incoming/acme/a.ndjson")]})
    assert (
        parse_message(json.dumps({"Type": "Notification", "Message": inner}))[0].key
        == "incoming/acme/a.ndjson"
    )
    bridge = {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": BUCKET}, "object": {"key": "incoming/acme/a b.ndjson", "size": 3}},
    }
    assert parse_message(json.dumps(bridge)) == [ObjectEvent(BUCKET, "incoming/acme/a b.ndjson", 3)]


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"hello": "world"}'])
def test_unreadable_bodies_are_none(body: str) -> None:
    assert parse_message(body) is None


# -- the consumer on moto's SQS -------------------------------------------------------------------------


@pytest.fixture
def sqs(mock_s3: Any) -> Any:
    return boto3.client("sqs", region_name=REGION)


def consumer(sqs: Any, queue_url: str, **kw: Any) -> QueueConsumer:
    options: dict[str, Any] = {"wait_seconds": 0, "visibility_seconds": 30, "retry_seconds": 0}
    options.update(kw)
    return QueueConsumer(
        sqs, queue_url, lambda e: e.key if e.key.startswith("incoming/") else None, **options
    )


def send(sqs: Any, queue_url: str, *keys: str) -> None:
    sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"Records": [s3_record(k) for k in keys]}))


def test_real_notifications_from_moto_s3_are_received_and_deleted_once_acknowledged(
    mock_s3: Any, sqs: Any
) -> None:
    queue_url = notified_queue(mock_s3, sqs)
    mock_s3.put_object(Bucket=BUCKET, Key="incoming/acme/a b+c.ndjson", Body=b"{}")
    mock_s3.put_object(Bucket=BUCKET, Key="archived/acme/x.ndjson", Body=b"{}")  # filtered by S3
    reader = consumer(sqs, queue_url)
    stop = threading.Event()

    got: dict[str, ObjectEvent] = {}
    for _ in range(3):  # the TestEvent and the upload may arrive in separate receives
        got.update(reader.receive(1, stop))
    assert set(got) == {"incoming/acme/a b+c.ndjson"}
    assert got["incoming/acme/a b+c.ndjson"].size == 2
    assert queue_depth(sqs, queue_url) == 1  # held, not deleted

    reader.acknowledge("incoming/acme/a b+c.ndjson", processed=True)
    assert queue_depth(sqs, queue_url) == 0
    reader.close()


def test_unfinished_files_come_back_and_foreign_events_are_dropped(mock_s3: Any, sqs: Any) -> None:
    queue_url = sqs.create_queue(QueueName="q")["QueueUrl"]
    send(sqs, queue_url, "incoming/acme/a.ndjson")
    send(sqs, queue_url, "somewhere/else.ndjson")
    sqs.send_message(QueueUrl=queue_url, MessageBody="garbage")
    first = consumer(sqs, queue_url)
    stop = threading.Event()

    assert set(first.receive(0, stop)) == {"incoming/acme/a.ndjson"}
    assert queue_depth(sqs, queue_url) == 1  # the other two were deleted on receipt

    first.acknowledge("incoming/acme/a.ndjson", processed=False)  # retry_seconds=0: visible now
    second = consumer(sqs, queue_url)
    assert set(second.receive(0, stop)) == {"incoming/acme/a.ndjson"}
    second.acknowledge("incoming/acme/a.ndjson", processed=True)
    assert queue_depth(sqs, queue_url) == 0


def test_a_message_naming_several_keys_is_deleted_after_the_last_one(mock_s3: Any, sqs: Any) -> None:
    queue_url = sqs.create_queue(QueueName="q")["QueueUrl"]
    send(sqs, queue_url, "incoming/acme/a.ndjson", "incoming/acme/b.ndjson")
    reader = consumer(sqs, queue_url)
    assert set(reader.receive(0, threading.Event())) == {"incoming/acme/a.ndjson", "incoming/acme/b.ndjson"}
    reader.acknowledge("incoming/acme/a.ndjson", processed=True)
    assert queue_depth(sqs, queue_url) == 1
    reader.acknowledge("incoming/acme/b.ndjson", processed=True)
    assert queue_depth(sqs, queue_url) == 0
    reader.acknowledge("incoming/acme/b.ndjson", processed=True)  # repeated: harmless


def test_held_messages_are_extended_while_work_goes_on(mock_s3: Any, sqs: Any) -> None:
    queue_url = sqs.create_queue(QueueName="q")["QueueUrl"]
    send(sqs, queue_url, "incoming/acme/big.ndjson")
    extended: list[dict[str, Any]] = []
    sqs.meta.events.register(
        "provide-client-params.sqs.ChangeMessageVisibilityBatch",
        lambda params, **kw: extended.extend(params["Entries"]),
    )
    reader = consumer(sqs, queue_url, visibility_seconds=3)  # the heartbeat extends every second
    assert reader.receive(0, threading.Event())
    deadline = time.monotonic() + 30
    while not extended and time.monotonic() < deadline:
        time.sleep(0.1)
    assert extended and extended[0]["VisibilityTimeout"] == 3
    assert reader.held_keys() == {"incoming/acme/big.ndjson"}
    reader.acknowledge("incoming/acme/big.ndjson", processed=True)
    reader.close()


def test_a_consumer_that_dies_loses_nothing(mock_s3: Any, sqs: Any) -> None:
    """No acknowledgement, no clean close (the process was killed): the message reappears
    once its visibility runs out, for another worker."""
    queue_url = sqs.create_queue(QueueName="q")["QueueUrl"]
    send(sqs, queue_url, "incoming/acme/a.ndjson")
    dying = consumer(sqs, queue_url, visibility_seconds=1)
    assert dying.receive(0, threading.Event())
    dying._stop.set()  # a killed process's heartbeat thread dies with it
    survivor = consumer(sqs, queue_url)
    got: dict[str, ObjectEvent] = {}
    deadline = time.monotonic() + 30
    while not got and time.monotonic() < deadline:
        time.sleep(0.2)
        got = survivor.receive(0, threading.Event())
    assert set(got) == {"incoming/acme/a.ndjson"}


def test_close_hands_held_messages_back_at_once(mock_s3: Any, sqs: Any) -> None:
    queue_url = sqs.create_queue(QueueName="q")["QueueUrl"]
    send(sqs, queue_url, "incoming/acme/a.ndjson")
    leaving = consumer(sqs, queue_url, visibility_seconds=600)
    assert leaving.receive(0, threading.Event())
    leaving.close()
    assert set(consumer(sqs, queue_url).receive(0, threading.Event())) == {"incoming/acme/a.ndjson"}


def test_source_filters_events_to_its_prefix_and_skips_temporary_names(mock_s3: Any, sqs: Any) -> None:
    queue_url = sqs.create_queue(QueueName="q")["QueueUrl"]
    send(
        sqs,
        queue_url,
        "zone/incoming/acme/a.ndjson",
        "zone/incoming/acme/a.ndjson.filepart",
        "other/incoming/acme/b.ndjson",
        "zone/archived/acme/c.ndjson",
    )
    source = make_source("zone", queue_url=queue_url, poll_seconds=0)
    assert source.wait_for_activity(0, threading.Event()) == {"incoming/acme/a.ndjson"}
    source.acknowledge("incoming/acme/a.ndjson")
    assert queue_depth(sqs, queue_url) == 0
    source.close()
