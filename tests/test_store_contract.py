"""One contract for every store: SQLite (the embedded default), memory, MongoDB on mongomock, and
a real MongoDB server when MONGODB_URI is set (skipped otherwise; pytest -ra prints the reason)."""

from __future__ import annotations

import pytest

from conftest import mongomock_store
from dropzone.pipeline.canonical import resource_hash
from dropzone.store.base import ClaimState, ResourceWrite, Store


def write(resource: dict) -> ResourceWrite:
    return ResourceWrite(resource["resourceType"], resource["id"], resource, resource_hash(resource))


def patient(pid: str, family: str = "A", mrn: str | None = None) -> dict:
    doc = {"resourceType": "Patient", "id": pid, "name": [{"family": family}]}
    if mrn:
        doc["identifier"] = [{"system": "urn:mrn", "value": mrn}]
    return doc


def observation(oid: str, pid: str) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": f"Patient/{pid}"},
    }


def test_new_resources_are_version_1_with_metadata(any_store: Store) -> None:
    result = any_store.resources.upsert("t1", [write(patient("p1")), write(patient("p2"))], "sha-a")
    assert (result.loaded, result.unchanged) == (2, 0)
    doc = any_store.resources.get_document("t1", "Patient", "p1")
    assert doc["meta"]["versionId"] == "1" and doc["meta"]["lastUpdated"]
    assert doc["_dz"]["tenant"] == "t1" and doc["_dz"]["file_sha256"] == "sha-a"
    assert any_store.resources.get("t1", "Patient", "p1")["name"] == [{"family": "A"}]
    assert "_dz" not in any_store.resources.get("t1", "Patient", "p1")


def test_identical_content_changes_nothing(any_store: Store) -> None:
    any_store.resources.upsert("t1", [write(patient("p1"))], "sha-a")
    before = any_store.resources.get_document("t1", "Patient", "p1")
    result = any_store.resources.upsert("t1", [write(patient("p1"))], "sha-b")
    assert (result.loaded, result.unchanged) == (0, 1)
    assert any_store.resources.get_document("t1", "Patient", "p1") == before
    assert any_store.resources.history("t1", "Patient", "p1") == []


def test_same_file_retry_counts_as_loaded_without_new_version(any_store: Store) -> None:
    any_store.resources.upsert("t1", [write(patient("p1"))], "sha-a")
    result = any_store.resources.upsert("t1", [write(patient("p1"))], "sha-a")
    assert (result.loaded, result.unchanged) == (1, 0)
    assert any_store.resources.get_document("t1", "Patient", "p1")["meta"]["versionId"] == "1"


def test_changed_content_bumps_version_and_keeps_history(any_store: Store) -> None:
    any_store.resources.upsert("t1", [write(patient("p1", "A"))], "sha-a")
    any_store.resources.upsert("t1", [write(patient("p1", "B"))], "sha-b")
    any_store.resources.upsert("t1", [write(patient("p1", "C"))], "sha-c")
    current = any_store.resources.get_document("t1", "Patient", "p1")
    assert current["meta"]["versionId"] == "3" and current["name"] == [{"family": "C"}]
    history = any_store.resources.history("t1", "Patient", "p1")
    assert [h["meta"]["versionId"] for h in history] == ["1", "2"]
    assert [h["name"][0]["family"] for h in history] == ["A", "B"]
    assert current["_dz"]["first_ingested"] == history[0]["_dz"]["first_ingested"]


def test_tenants_are_isolated(any_store: Store) -> None:
    any_store.resources.upsert("t1", [write(patient("123", "A"))], "x")
    any_store.resources.upsert("t2", [write(patient("123", "B"))], "y")
    assert any_store.resources.get("t1", "Patient", "123")["name"][0]["family"] == "A"
    assert any_store.resources.get("t2", "Patient", "123")["name"][0]["family"] == "B"
    assert any_store.resources.counts(["t1"]) == {"Patient": 1}
    assert any_store.resources.counts() == {"Patient": 2}


def test_counts_per_tenant_and_type(any_store: Store) -> None:
    any_store.resources.upsert("t1", [write(patient("a")), write(patient("b"))], "x")
    any_store.resources.upsert("t2", [write(patient("a")), write(observation("o1", "a"))], "y")
    assert any_store.resources.tenant_counts() == {
        "t1": {"Patient": 2},
        "t2": {"Observation": 1, "Patient": 1},
    }
    assert any_store.resources.tenant_counts(["t2"]) == {"t2": {"Observation": 1, "Patient": 1}}
    assert any_store.resources.tenant_counts(["nobody"]) == {}


def test_iter_resources_streams_one_tenant_and_type_as_stored(any_store: Store) -> None:
    any_store.resources.upsert("t1", [write(patient(f"p{i:04}")) for i in range(1200)], "x")
    any_store.resources.upsert("t2", [write(patient("other"))], "y")
    exported = list(any_store.resources.iter_resources("t1", "Patient"))
    assert [r["id"] for r in exported] == [f"p{i:04}" for i in range(1200)]  # id order, every page
    assert exported[7] == any_store.resources.get("t1", "Patient", "p0007")
    assert all("_dz" not in r and "_id" not in r and r["meta"]["versionId"] == "1" for r in exported)
    assert list(any_store.resources.iter_resources("t1", "Observation")) == []


def test_iter_resources_since_keeps_what_was_stored_at_or_after(any_store: Store) -> None:
    any_store.resources.upsert("t1", [write(patient("old"))], "x")
    stamp = any_store.resources.get("t1", "Patient", "old")["meta"]["lastUpdated"]
    import time

    time.sleep(0.01)
    any_store.resources.upsert("t1", [write(patient("new"))], "x")
    later = any_store.resources.get("t1", "Patient", "new")["meta"]["lastUpdated"]
    assert [r["id"] for r in any_store.resources.iter_resources("t1", "Patient", since=stamp)] == [
        "new",
        "old",
    ]
    assert [r["id"] for r in any_store.resources.iter_resources("t1", "Patient", since=later)] == ["new"]
    assert list(any_store.resources.iter_resources("t1", "Patient", since="2999-01-01T00:00:00.000Z")) == []


def test_repeated_id_in_one_batch_keeps_the_last(any_store: Store) -> None:
    result = any_store.resources.upsert("t1", [write(patient("p1", "A")), write(patient("p1", "B"))], "s")
    assert result.loaded == 2
    assert any_store.resources.get("t1", "Patient", "p1")["name"][0]["family"] == "B"
    assert any_store.resources.get_document("t1", "Patient", "p1")["meta"]["versionId"] == "2"


def test_identifier_lookup_and_delete(any_store: Store) -> None:
    any_store.resources.upsert("t1", [write(patient("p1", mrn="M1")), write(patient("p2", mrn="M2"))], "s")
    assert any_store.resources.find_by_identifier("t1", "Patient", "urn:mrn", "M1") == ["p1"]
    assert any_store.resources.find_by_identifier("t1", "Patient", None, "M2") == ["p2"]
    assert any_store.resources.find_by_identifier("t2", "Patient", None, "M2") == []
    assert any_store.resources.delete("t1", "Patient", "p1") is True
    assert any_store.resources.get("t1", "Patient", "p1") is None
    assert any_store.resources.delete("t1", "Patient", "p1") is False
    assert [h["meta"]["versionId"] for h in any_store.resources.history("t1", "Patient", "p1")] == ["1"]


# -- ledger --------------------------------------------------------------------------------------


def test_claims_are_exclusive_until_done(any_store: Store) -> None:
    ledger = any_store.ledger
    first = ledger.claim("t1", "sha", "incoming/t1/a", "w1", 60)
    assert first.state is ClaimState.ACQUIRED and not first.claim.resumed
    assert ledger.claim("t1", "sha", "incoming/t1/a", "w2", 60).state is ClaimState.BUSY
    assert ledger.claim("t2", "sha", "incoming/t2/a", "w2", 60).state is ClaimState.ACQUIRED
    assert ledger.renew(first.claim, 60)
    assert ledger.complete(first.claim, "archived", "archived/t1/2026/01/01/a")
    done = ledger.claim("t1", "sha", "incoming/t1/b", "w2", 60)
    assert done.state is ClaimState.DONE
    assert done.done["destination"] == "archived/t1/2026/01/01/a" and done.done["moved"] is False
    ledger.mark_moved(first.claim.key)
    assert ledger.claim("t1", "sha", "incoming/t1/b", "w2", 60).done["moved"] is True


def test_expired_lease_is_taken_over_and_the_old_holder_is_locked_out(any_store: Store) -> None:
    ledger = any_store.ledger
    old = ledger.claim("t1", "sha", "k", "w1", 0.01).claim
    import time

    time.sleep(0.05)
    new = ledger.claim("t1", "sha", "k", "w2", 60)
    assert new.state is ClaimState.ACQUIRED and new.claim.resumed
    assert new.claim.file_id == old.file_id and new.claim.attempt == old.attempt + 1
    assert ledger.renew(old, 60) is False
    assert ledger.complete(old, "archived", "x") is False
    assert ledger.complete(new.claim, "archived", "x") is True


def test_released_and_quarantined_content_can_be_claimed_again(any_store: Store) -> None:
    ledger = any_store.ledger
    c = ledger.claim("t1", "sha", "k", "w1", 60).claim
    ledger.release(c)
    again = ledger.claim("t1", "sha", "k", "w2", 60)
    assert again.state is ClaimState.ACQUIRED
    assert ledger.complete(again.claim, "quarantined", "quarantine/t1/x")
    assert ledger.claim("t1", "sha", "k", "w3", 60).state is ClaimState.ACQUIRED


def test_file_records_and_summary(any_store: Store) -> None:
    ledger = any_store.ledger
    ledger.save_file(
        {"_id": "f1", "tenant": "t1", "state": "archived", "received_at": "2026-01-01T00:00:00Z"}
    )
    ledger.save_file({"_id": "f2", "tenant": "t1", "state": "partial", "received_at": "2026-01-02T00:00:00Z"})
    ledger.save_file(
        {"_id": "f3", "tenant": "t2", "state": "archived", "received_at": "2026-01-03T00:00:00Z"}
    )
    ledger.save_file(
        {"_id": "f1", "tenant": "t1", "state": "quarantined", "received_at": "2026-01-01T00:00:00Z"}
    )
    assert ledger.get_file("f1")["state"] == "quarantined"
    assert [f["_id"] for f in ledger.files()] == ["f3", "f2", "f1"]
    assert [f["_id"] for f in ledger.files(tenant="t1", limit=1)] == ["f2"]
    assert ledger.summary() == {"t1": {"partial": 1, "quarantined": 1}, "t2": {"archived": 1}}


@pytest.mark.parametrize("rtype", ["_files", "_claims", "not a type"])
def test_mongo_refuses_reserved_or_invalid_collection_names(rtype: str) -> None:
    store = mongomock_store()
    bad = ResourceWrite(rtype, "x", {"resourceType": rtype, "id": "x"}, "h")
    with pytest.raises(ValueError):
        store.resources.upsert("t1", [bad], "s")


def test_a_retried_file_does_not_write_again_what_another_file_changed_since(any_store: Store) -> None:
    """Found by the crash campaign: file A dies after storing p0, file B changes p0, A is resumed.
    A's p0 is already in history as A's write: counted as loaded, not stored as a third version
    that would put A's older content back over B's."""
    male, female = patient("p0", "A"), patient("p0", "B")
    any_store.resources.upsert("t1", [write(male)], "file-a")
    any_store.resources.upsert("t1", [write(female)], "file-b")
    resumed = any_store.resources.upsert("t1", [write(male), write(patient("p1"))], "file-a")
    assert (resumed.loaded, resumed.unchanged) == (2, 0)
    current = any_store.resources.get_document("t1", "Patient", "p0")
    assert current["meta"]["versionId"] == "2" and current["name"] == [{"family": "B"}]
    assert [h["meta"]["versionId"] for h in any_store.resources.history("t1", "Patient", "p0")] == ["1"]
    # A third file sending A's content again is a real change: a new version.
    again = any_store.resources.upsert("t1", [write(male)], "file-c")
    assert again.loaded == 1
    assert any_store.resources.get_document("t1", "Patient", "p0")["meta"]["versionId"] == "3"


def test_keyed_follows_updates_and_deletes_of_the_keys_it_finds(any_store: Store) -> None:
    """``keyed`` (what resolve_pending asks after every file; the memory store keeps an index of
    the internal ``~`` keys for it) answers from the current versions only."""
    from dropzone.search.index import CONDITIONAL_KEY, waiting_key

    waiting = waiting_key("Patient", "urn:mrn", "m1")
    waiter = observation("o1", "x") | {"subject": {"reference": "Patient?identifier=urn:mrn|m1"}}
    other = observation("o2", "p9")
    resources = any_store.resources
    resources.upsert("t1", [write(waiter), write(other)], None)
    resources.upsert("t2", [write(waiter)], None)
    types = ["Patient", "Observation"]
    assert sorted(resources.keyed("t1", [waiting, CONDITIONAL_KEY], types)) == [
        ("Observation", "o1", CONDITIONAL_KEY),
        ("Observation", "o1", waiting),
    ]
    assert resources.keys_present("t1", [waiting, waiting_key("Patient", None, "nobody")], types) == {waiting}
    assert resources.keyed("t1", [waiting], ["Patient"]) == []  # not among the types asked
    resources.upsert("t1", [write(observation("o1", "p1"))], None)  # the reference resolved
    assert resources.keyed("t1", [waiting, CONDITIONAL_KEY], types) == []
    assert resources.keyed("t2", [waiting], types) == [("Observation", "o1", waiting)]
    resources.delete("t2", "Observation", "o1")
    assert resources.keyed("t2", [waiting], types) == []


@pytest.mark.parametrize("kind", ["mongomock", "mongodb"])
def test_mongodb_never_replaces_a_version_it_did_not_read(kind: str) -> None:
    """Two workers may read one resource at the same moment. MongoDB has no transaction around
    read and write here, so each write names the version it replaces (a first version is an
    insert): the one that comes second reads again and writes the next version, with the first
    one's in history, instead of overwriting it unseen."""
    import os

    from conftest import real_mongo_store

    if kind == "mongodb" and not os.environ.get("MONGODB_URI"):
        pytest.skip("real MongoDB tests need MONGODB_URI (no MongoDB server on this machine)")
    store = mongomock_store() if kind == "mongomock" else real_mongo_store()
    resources = store.resources
    original = resources.existing
    racing = {"first": write(patient("p1", "Other")), "second": write(patient("p2", "Other2"))}

    def stale_existing(tenant: str, rtype: str, ids: list) -> dict:
        answer = original(tenant, rtype, ids)  # what this worker read ...
        if racing:  # ... then another worker writes p1 (new) and p2 (version 2) meanwhile
            resources.existing = original  # type: ignore[method-assign]
            resources.upsert("t1", [racing.pop("first"), racing.pop("second")], "sha-other")
        return answer

    try:
        resources.upsert("t1", [write(patient("p2", "A"))], "sha-0")
        resources.existing = stale_existing  # type: ignore[method-assign]
        result = resources.upsert("t1", [write(patient("p1", "B")), write(patient("p2", "C"))], "sha-b")
        assert (result.loaded, result.unchanged) == (2, 0)
        p1 = resources.get_document("t1", "Patient", "p1")
        p2 = resources.get_document("t1", "Patient", "p2")
        assert p1["name"] == [{"family": "B"}] and p1["meta"]["versionId"] == "2"
        assert p2["name"] == [{"family": "C"}] and p2["meta"]["versionId"] == "3"
        assert [d["name"] for d in resources.history("t1", "Patient", "p1")] == [[{"family": "Other"}]]
        assert [d["name"] for d in resources.history("t1", "Patient", "p2")] == [
            [{"family": "A"}],
            [{"family": "Other2"}],
        ]
        assert result.new_ids == []  # p1 was not new by the time it was written
    finally:
        if kind == "mongodb":
            store._client.drop_database(store._test_database)  # type: ignore[attr-defined]
        store.close()
