"""The ledger methods the API's status call uses, on both stores (MongoDB through mongomock)."""

from __future__ import annotations

from collections.abc import Iterator

import mongomock
import pytest

from dropzone.store.base import Store
from dropzone.store.memory import MemoryStore
from dropzone.store.mongo import MongoStore


@pytest.fixture(params=["memory", "mongomock"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    else:
        s = MongoStore(client=mongomock.MongoClient(), database="dz_api_ledger")
        s.resources.ensure_indexes()
        yield s
        s.close()


def test_find_file_returns_the_newest_record_for_a_key(store: Store) -> None:
    key = "incoming/acme/api/0123/p.ndjson"
    assert store.ledger.find_file(key) is None
    store.ledger.save_file(
        {
            "_id": "a",
            "tenant": "acme",
            "key": key,
            "state": "quarantined",
            "received_at": "2026-01-01T00:00:00.000Z",
        }
    )
    store.ledger.save_file(
        {
            "_id": "b",
            "tenant": "acme",
            "key": key,
            "state": "processing",
            "received_at": "2026-01-02T00:00:00.000Z",
        }
    )
    store.ledger.save_file(
        {
            "_id": "c",
            "tenant": "acme",
            "key": key + "x",
            "state": "archived",
            "received_at": "2026-01-03T00:00:00.000Z",
        }
    )
    assert store.ledger.find_file(key)["_id"] == "b"
    store.ledger.save_file(
        {
            "_id": "b",
            "tenant": "acme",
            "key": key,
            "state": "archived",
            "received_at": "2026-01-02T00:00:00.000Z",
        }
    )
    assert store.ledger.find_file(key)["state"] == "archived"


def test_upload_receipts(store: Store) -> None:
    assert store.ledger.get_upload("f" * 32) is None
    receipt = {"_id": "f" * 32, "tenant": "acme", "key": "incoming/acme/api/f/x", "name": "x", "size": 3}
    store.ledger.save_upload(receipt)
    assert store.ledger.get_upload("f" * 32) == receipt
    # Receipts are not file records: summaries and listings do not count them.
    assert store.ledger.summary() == {} and store.ledger.files() == []
