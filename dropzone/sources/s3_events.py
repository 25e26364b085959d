"""S3 event notifications delivered through SQS: parse them, hold them while their files are
processed, and delete them only once the outcome is recorded.

Why hold instead of deleting on receipt: a worker that dies mid-file must not lose the event.
A held message's visibility is extended in the background, so a big file never reappears to
another worker while this one is still busy; once the worker stops (crash, kill), the message
becomes visible again after ``visibility_seconds`` and another worker picks it up, where the
ledger's lease and the idempotent store make the second attempt finish the same file once.

Message shapes accepted: S3's own notification (``Records[].s3``), the same wrapped in an SNS
envelope (``Type: Notification``), and EventBridge's ``Object Created``. The first message S3
sends to a new queue is an ``s3:TestEvent`` without ``Records``; it is dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from botocore.exceptions import BotoCoreError, ClientError

from dropzone.log import event

_log = logging.getLogger("dropzone.sources.s3")
_SQS_MAX_WAIT = 20
_SQS_BATCH = 10


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    """One ``ObjectCreated`` notification: the object's full key in its bucket (decoded)."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None


def parse_message(body: str) -> list[ObjectEvent] | None:
    """The ``ObjectCreated`` events in one SQS message body.

    ``[]`` for messages that carry nothing to do (test events, removals), ``None`` when the body
    is not a notification at all.
    """
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):
        return parse_message(doc["Message"])  # delivered through SNS
    if doc.get("Event") == "s3:TestEvent":
        return []
    if doc.get("source") == "aws.s3" and isinstance(doc.get("detail"), dict):
        return _from_eventbridge(doc)
    records = doc.get("Records")
    if not isinstance(records, list):
        return None
    found = []
    for record in records:
        parsed = _from_record(record) if isinstance(record, dict) else None
        if parsed is not None:
            found.append(parsed)
    return found


def _from_record(record: dict[str, Any]) -> ObjectEvent | None:
    name = str(record.get("eventName", ""))
    if record.get("eventSource") != "aws:s3" or not name.startswith("ObjectCreated:"):
        return None
    s3 = record.get("s3") or {}
    bucket = (s3.get("bucket") or {}).get("name")
    obj = s3.get("object") or {}
    if not bucket or not isinstance(obj.get("key"), str):
        return None
    # S3 URL-encodes keys in notifications ('/' stays, spaces become '+', '%2F' seen on moto).
    return ObjectEvent(
        bucket=bucket,
        key=unquote_plus(obj["key"]),
        size=obj.get("size"),
        etag=(obj.get("eTag") or obj.get("etag") or None),
        version_id=obj.get("versionId") or None,
    )


def _from_eventbridge(doc: dict[str, Any]) -> list[ObjectEvent]:
    if doc.get("detail-type") != "Object Created":
        return []
    detail = doc["detail"]
    bucket = (detail.get("bucket") or {}).get("name")
    obj = detail.get("object") or {}
    if not bucket or not isinstance(obj.get("key"), str):
        return []
    # EventBridge keys are not URL-encoded.
    return [ObjectEvent(bucket, obj["key"], obj.get("size"), obj.get("etag"), obj.get("version-id"))]


@dataclass(slots=True)
class _Held:
    receipt: str
    keys: set[str]
    received: float
    retry: bool = False


@dataclass(slots=True)
class _State:
    messages: dict[str, _Held] = field(default_factory=dict)
    by_key: dict[str, set[str]] = field(default_factory=dict)


class QueueConsumer:
    """Receives notifications for one zone and keeps their messages until acknowledged.

    ``accept`` maps an event to the zone key it concerns (``incoming/<tenant>/...``) or None for
    events this zone ignores (another bucket or prefix, temporary names, outside incoming/).
    """

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        accept: Callable[[ObjectEvent], str | None],
        *,
        wait_seconds: float,
        visibility_seconds: int,
        retry_seconds: int,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._accept = accept
        self._wait = wait_seconds
        self._visibility = visibility_seconds
        self._retry = retry_seconds
        self._lock = threading.Lock()
        self._state = _State()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- receiving -----------------------------------------------------------------------------

    def receive(self, timeout: float, stop: threading.Event) -> dict[str, ObjectEvent]:
        """One long poll (at most ``timeout`` seconds): zone key -> its latest event."""
        if stop.is_set():
            return {}
        wait = int(max(0, min(timeout, self._wait, _SQS_MAX_WAIT)))
        try:
            answer = self._sqs.receive_message(
                QueueUrl=self._queue_url,
                MaxNumberOfMessages=_SQS_BATCH,
                WaitTimeSeconds=wait,
                VisibilityTimeout=self._visibility,
            )
        except (ClientError, BotoCoreError) as err:
            # The listing rescan still finds files; back off instead of spinning on a dead queue.
            event(_log, "s3.queue.unavailable", logging.WARNING, error_type=type(err).__name__)
            stop.wait(max(1.0, min(timeout, 5.0)))
            return {}
        found: dict[str, ObjectEvent] = {}
        for message in answer.get("Messages", []):
            found.update(self._take(message))
        if found:
            self._ensure_heartbeat()
        return found

    def _take(self, message: dict[str, Any]) -> dict[str, ObjectEvent]:
        message_id, receipt = message["MessageId"], message["ReceiptHandle"]
        events = parse_message(message.get("Body", ""))
        if events is None:
            event(_log, "s3.queue.unreadable_message", logging.WARNING, message_id=message_id)
        keys: dict[str, ObjectEvent] = {}
        for item in events or []:
            key = self._accept(item)
            if key is not None:
                keys[key] = item
        if not keys:
            self._delete(receipt)  # nothing for this zone (or a test event): never redeliver it
            return {}
        with self._lock:
            self._state.messages[message_id] = _Held(receipt, set(keys), time.monotonic())
            for key in keys:
                self._state.by_key.setdefault(key, set()).add(message_id)
        return keys

    # -- acknowledging -------------------------------------------------------------------------

    def acknowledge(self, key: str, processed: bool) -> None:
        """Done with ``key``: delete its messages, or let them reappear after ``retry_seconds``
        when the file was not finished (skipped, transient error)."""
        finished: list[_Held] = []
        with self._lock:
            for message_id in self._state.by_key.pop(key, set()):
                held = self._state.messages.get(message_id)
                if held is None:
                    continue
                held.keys.discard(key)
                held.retry = held.retry or not processed
                if not held.keys:
                    finished.append(self._state.messages.pop(message_id))
        for held in finished:
            if held.retry:
                self._change_visibility([held.receipt], self._retry)
            else:
                self._delete(held.receipt)

    def held_keys(self) -> set[str]:
        with self._lock:
            return set(self._state.by_key)

    def _delete(self, receipt: str) -> None:
        try:
            self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=receipt)
        except (ClientError, BotoCoreError) as err:
            # The message comes back later; its file is gone or finished by then, so the
            # redelivery only costs a stat.
            event(_log, "s3.queue.delete_failed", logging.WARNING, error_type=type(err).__name__)

    def _change_visibility(self, receipts: list[str], seconds: int) -> None:
        for start in range(0, len(receipts), _SQS_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": r, "VisibilityTimeout": seconds}
                for i, r in enumerate(receipts[start : start + _SQS_BATCH])
            ]
            try:
                self._sqs.change_message_visibility_batch(QueueUrl=self._queue_url, Entries=entries)
            except (ClientError, BotoCoreError) as err:
                event(_log, "s3.queue.visibility_failed", logging.WARNING, error_type=type(err).__name__)

    # -- keeping held messages invisible ---------------------------------------------------------

    def _ensure_heartbeat(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._heartbeat, name="s3-queue-heartbeat", daemon=True)
            self._thread.start()

    def _heartbeat(self) -> None:
        # Extend well before expiry: a third of the visibility leaves room for two slow calls.
        interval = max(self._visibility / 3, 0.5)
        while not self._stop.wait(interval):
            with self._lock:
                receipts = [h.receipt for h in self._state.messages.values()]
            if receipts:
                self._change_visibility(receipts, self._visibility)

    def extend_now(self) -> None:
        """Extend every held message immediately (tests, and callers about to start long work)."""
        with self._lock:
            receipts = [h.receipt for h in self._state.messages.values()]
        self._change_visibility(receipts, self._visibility)

    def close(self) -> None:
        """Stop extending, and hand unfinished messages back to the queue at once (a clean
        shutdown should not make other workers wait out the visibility timeout)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            receipts = [h.receipt for h in self._state.messages.values()]
            self._state = _State()
        if receipts:
            self._change_visibility(receipts, 0)
