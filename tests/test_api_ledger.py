"""The ledger methods the API's status call uses, on every store (conftest ``any_store``)."""

from __future__ import annotations

from dropzone.store.base import Store


def test_find_file_returns_the_newest_record_for_a_key(any_store: Store) -> None:
    key = "incoming/acme/api/0123/p.ndjson"
    assert any_store.ledger.find_file(key) is None
    any_store.ledger.save_file(
        {
            "_id": "a",
            "tenant": "acme",
            "key": key,
            "state": "quarantined",
            "received_at": "2026-01-01T00:00:00.000Z",
        }
    )
    any_store.ledger.save_file(
        {
            "_id": "b",
            "tenant": "acme",
            "key": key,
            "state": "processing",
            "received_at": "2026-01-02T00:00:00.000Z",
        }
    )
    any_store.ledger.save_file(
        {
            "_id": "c",
            "tenant": "acme",
            "key": key + "x",
            "state": "archived",
            "received_at": "2026-01-03T00:00:00.000Z",
        }
    )
    assert any_store.ledger.find_file(key)["_id"] == "b"
    any_store.ledger.save_file(
        {
            "_id": "b",
            "tenant": "acme",
            "key": key,
            "state": "archived",
            "received_at": "2026-01-02T00:00:00.000Z",
        }
    )
    assert any_store.ledger.find_file(key)["state"] == "archived"


def test_upload_receipts(any_store: Store) -> None:
    assert any_store.ledger.get_upload("f" * 32) is None
    receipt = {"_id": "f" * 32, "tenant": "acme", "key": "incoming/acme/api/f/x", "name": "x", "size": 3}
    any_store.ledger.save_upload(receipt)
    assert any_store.ledger.get_upload("f" * 32) == receipt
    # Receipts are not file records: summaries and listings do not count them.
    assert any_store.ledger.summary() == {} and any_store.ledger.files() == []
