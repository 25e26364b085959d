"""The embedded default store: one SQLite database file (Python's ``sqlite3``), persistent.

Why SQLite: it needs no server, outlives the process, and its WAL mode lets several
``dropzone run`` processes on one machine share one zone. Every write is a ``BEGIN IMMEDIATE``
transaction (the database's single writer lock), so a lease is taken by exactly one process;
readers never block. Durability: a ledger write (claim, outcome) and any write a caller is told
about (the API) commits with ``synchronous=FULL``, so it survives a power cut; that is what
"never loaded twice" rests on. A file's resource batches commit with ``NORMAL`` (no fsync, still
atomic and consistent after a crash): the file's closing ledger commit fsyncs the WAL, and the
WAL is appended in order, so every batch before it is then on disk too. A power cut before that
loses batches of a file that is still unfinished in the ledger, and the file is processed again.

Layout (schema version ``SCHEMA_VERSION``, kept in ``dz_meta``):

* ``resources``: one row per current resource, the FHIR JSON in ``body`` (exactly what
  the API and ``export`` return: the sender's resource with our ``meta.versionId`` and
  ``meta.lastUpdated``; numbers keep their digits, ``processors.fhir_json``): as TEXT, or
  Zstandard-packed as a BLOB from ``packing.PACK_FROM`` bytes on (``dropzone.store.packing``);
  tenant/type/id/version/hash in columns;
* ``history``: previous versions, same shape; ``identifiers``: (system, value) lookups;
* ``search_keys`` (tenant, key, type, id) and ``search_dates`` (tenant, type, param, low, high,
  id): the search index (``dropzone.search.index``), replaced with each version;
* ``files``, ``claims``, ``uploads``: the ledger.

A version 1 database (before the search index) is upgraded in place on open: the index tables
are added and filled from the stored resources, in one transaction; a version 2 one (text bodies
only) is marked version 3 and its rows are read as they are. A database of any other schema
version is refused with a clear message, never rewritten.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import orjson

from dropzone.errors import ConfigError, StoreUnavailable
from dropzone.log import event
from dropzone.search.index import REF_PREFIX, SearchRows, index_signature, search_rows
from dropzone.search.query import SearchPage, SearchQuery
from dropzone.store import packing, sqlite_search
from dropzone.store.base import (
    META_KEY,
    Claim,
    ClaimAnswer,
    ClaimState,
    Existing,
    Ledger,
    ResourceStore,
    ResourceWrite,
    Store,
    claim_key,
    with_server_meta,
)
from dropzone.store.memory import claim_from_document, new_claim_document
from processors import fhir_json

SCHEMA_VERSION = 3
# Well under SQLite's bound-parameter limit (32,766 since 3.32) with room for the other columns.
_IN_CHUNK = 900

_SCHEMA = """
CREATE TABLE dz_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE resources (
    tenant TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
    version INTEGER NOT NULL, hash TEXT NOT NULL, file_sha256 TEXT,
    first_ingested TEXT NOT NULL, last_ingested TEXT NOT NULL, body TEXT NOT NULL
);
CREATE UNIQUE INDEX resources_identity ON resources (tenant, type, id);
CREATE INDEX resources_updated ON resources (tenant, type, last_ingested, id);
CREATE TABLE history (
    tenant TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
    version INTEGER NOT NULL, hash TEXT NOT NULL, file_sha256 TEXT,
    first_ingested TEXT NOT NULL, last_ingested TEXT NOT NULL, body TEXT NOT NULL
);
CREATE UNIQUE INDEX history_version ON history (tenant, type, id, version);
-- system is '' when the identifier has none (FHIR forbids empty strings, so '' is unambiguous).
CREATE TABLE identifiers (
    tenant TEXT NOT NULL, type TEXT NOT NULL, value TEXT NOT NULL, system TEXT NOT NULL,
    id TEXT NOT NULL, PRIMARY KEY (tenant, type, value, system, id)
) WITHOUT ROWID;
CREATE INDEX identifiers_owner ON identifiers (tenant, type, id);
{search}CREATE TABLE files (
    id TEXT PRIMARY KEY, tenant TEXT, key TEXT, state TEXT, received_at TEXT, record TEXT NOT NULL
);
CREATE INDEX files_tenant ON files (tenant, received_at);
CREATE INDEX files_received ON files (received_at);
CREATE INDEX files_key ON files (key, received_at);
CREATE TABLE claims (
    key TEXT PRIMARY KEY, state TEXT NOT NULL, owner TEXT NOT NULL, lease_until REAL NOT NULL,
    path TEXT, attempt INTEGER NOT NULL, file_id TEXT NOT NULL, outcome TEXT, destination TEXT,
    moved INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE uploads (id TEXT PRIMARY KEY, record TEXT NOT NULL);
"""
# Added by schema version 2. search_keys' key comes first so that one key (a patient's
# compartment, a code) is one range across types. No index by owner: a replaced version's rows
# are found from its body (``_stored_search_rows``), which is exact as long as the index is
# computed the way it was written: ``dz_meta.search_index`` names that, and a database indexed
# another way is re-indexed on open (``_check_index``).
_SEARCH_SCHEMA = """
CREATE TABLE search_keys (
    tenant TEXT NOT NULL, key TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL,
    PRIMARY KEY (tenant, key, type, id)
) WITHOUT ROWID;
CREATE TABLE search_dates (
    tenant TEXT NOT NULL, type TEXT NOT NULL, param TEXT NOT NULL, low TEXT NOT NULL,
    high TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (tenant, type, param, low, high, id)
) WITHOUT ROWID;
CREATE INDEX search_dates_high ON search_dates (tenant, type, param, high);
"""
_SCHEMA = _SCHEMA.replace("{search}", _SEARCH_SCHEMA)

_log = logging.getLogger("dropzone.store")
P = ParamSpec("P")
R = TypeVar("R")


def _translated(method: Callable[P, R]) -> Callable[P, R]:
    """sqlite3 errors become StoreUnavailable (transient: the file stays in incoming/). SQLite's
    messages name the database condition ("database is locked", "database or disk is full"),
    never row values."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as err:
            raise StoreUnavailable(f"SQLite: {err}") from err

    return wrapper


class Database:
    """One connection per process, shared by its threads under a lock; transactions nest."""

    def __init__(self, path: Path, busy_timeout: float = 60.0, read_only: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._depth = 0
        self._conn = _connect(path, busy_timeout, read_only)
        self._synchronous = "FULL"
        try:
            if read_only:
                self._check_schema_read_only()
            else:
                self._check_schema()
        except sqlite3.Error as err:
            self._conn.close()
            raise StoreUnavailable(f"SQLite: cannot open {path}: {err}") from err

    @contextlib.contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction; inner calls join the outer one. ``durable=False``:
        the commit is not fsynced (see the module docstring for when that is safe)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._conn
                finally:
                    self._depth -= 1
                return
            synchronous = "FULL" if durable else "NORMAL"
            if synchronous != self._synchronous:
                self._conn.execute(f"PRAGMA synchronous = {synchronous}")
                self._synchronous = synchronous
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._conn
            except BaseException:
                self._depth = 0
                # Some errors (SQLITE_FULL, IOERR) have rolled the transaction back already.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self._conn.execute("COMMIT")

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    @contextlib.contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection for a few reads, outside any transaction."""
        with self._lock:
            yield self._conn

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _check_schema(self) -> None:
        with self.write() as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                # Statement by statement: executescript() would COMMIT our transaction.
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute("INSERT INTO dz_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                conn.execute("INSERT INTO dz_meta VALUES ('search_index', ?)", (index_signature(),))
                return
            if "dz_meta" not in tables:
                raise ConfigError(
                    f"{self.path} is an SQLite database but not a dropzone store "
                    "(point store.path at a new file)"
                )
            row = conn.execute("SELECT value FROM dz_meta WHERE key = 'schema_version'").fetchone()
            found = row[0] if row else "?"
            if found == "1":
                _upgrade_to_2(conn)
                found = "2"
            if found == "2":
                _upgrade_to_3(conn)
                found = "3"
            if found != str(SCHEMA_VERSION):
                raise ConfigError(
                    f"{self.path} has store schema version {found}; this dropzone reads version "
                    f"{SCHEMA_VERSION}. Nothing was changed: use the dropzone release that wrote it, "
                    "or point store.path at a new file"
                )
            _check_index(conn)

    def _check_schema_read_only(self) -> None:
        with self.reading() as conn:
            row = conn.execute("SELECT value FROM dz_meta WHERE key = 'schema_version'").fetchone()
            index = conn.execute("SELECT value FROM dz_meta WHERE key = 'search_index'").fetchone()
        if row is None or row[0] != str(SCHEMA_VERSION) or index is None or index[0] != index_signature():
            raise ConfigError(
                f"{self.path} was written by another dropzone release (schema or search index); "
                "open it once with a command that writes (dropzone status) to upgrade it: "
                "a read-only command never changes it"
            )


def _upgrade_to_2(conn: sqlite3.Connection) -> None:
    """Add the search index tables (filled by ``_check_index``, in the caller's transaction: a
    crash leaves a version 1 database, upgraded again next time)."""
    for statement in _SEARCH_SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("DROP INDEX resources_updated")
    conn.execute("CREATE INDEX resources_updated ON resources (tenant, type, last_ingested, id)")
    conn.execute("UPDATE dz_meta SET value = '2' WHERE key = 'schema_version'")


def _upgrade_to_3(conn: sqlite3.Connection) -> None:
    """Version 3 may hold packed bodies (BLOBs, ``dropzone.store.packing``), which a release
    that reads version 2 cannot read; the rows of version 2 stay as they are (text is read as
    it always was), so the upgrade only says so."""
    conn.execute("UPDATE dz_meta SET value = '3' WHERE key = 'schema_version'")


def _check_index(conn: sqlite3.Connection) -> None:
    """Re-index every resource when the index was computed another way (or never): in the
    caller's transaction, so a crash leaves the old index and the old signature."""
    row = conn.execute("SELECT value FROM dz_meta WHERE key = 'search_index'").fetchone()
    if row is not None and row[0] == index_signature():
        return
    conn.execute("DELETE FROM search_keys")
    conn.execute("DELETE FROM search_dates")
    cursor = conn.execute("SELECT tenant, type, id, body FROM resources")
    indexed = 0
    while rows := cursor.fetchmany(1000):
        keys, dates = [], []
        for tenant, rtype, rid, body in rows:
            found_keys, found_dates = search_rows(_parsed(body))
            keys += [(tenant, key, rtype, rid) for key in found_keys]
            dates += [(tenant, rtype, param, low, high, rid) for param, low, high in found_dates]
        conn.executemany("INSERT OR IGNORE INTO search_keys VALUES (?, ?, ?, ?)", keys)
        conn.executemany("INSERT OR IGNORE INTO search_dates VALUES (?, ?, ?, ?, ?, ?)", dates)
        indexed += len(rows)
    conn.execute("INSERT OR REPLACE INTO dz_meta VALUES ('search_index', ?)", (index_signature(),))
    event(_log, "store.search_reindexed", resources=indexed)


def _stored_search_rows(
    conn: sqlite3.Connection, identities: Sequence[tuple[str, str, str]]
) -> list[tuple[str, str, str, SearchRows]]:
    """(tenant, type, id, search rows) of the stored versions of ``identities``."""
    found = []
    for tenant, rtype, rid in identities:
        row = conn.execute(
            "SELECT body FROM resources WHERE tenant = ? AND type = ? AND id = ?", (tenant, rtype, rid)
        ).fetchone()
        if row is not None:
            found.append((tenant, rtype, rid, search_rows(_parsed(row[0]))))
    return found


def _replaced_search_rows(
    conn: sqlite3.Connection, docs: Sequence[_Row]
) -> list[tuple[str, str, str, SearchRows]]:
    """The index rows of the stored versions ``docs`` replace: the ones their writers sent
    where the stored hash is still the one they were made from, else from the stored bodies."""
    given = {doc[2]: doc[11] for doc in docs if doc[11] is not None}
    current: dict[tuple[str, str], str] = {}
    for tenant, rtype in {(doc[0], doc[1]) for doc in docs if doc[2] in given}:
        ids = [doc[2] for doc in docs if doc[0] == tenant and doc[1] == rtype and doc[2] in given]
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for rid, digest in conn.execute(
                f"SELECT id, hash FROM resources WHERE tenant = ? AND type = ? AND id IN ({marks})",
                (tenant, rtype, *chunk),
            ):
                current[(tenant, rid)] = digest
    found, unknown = [], []
    for doc in docs:
        replaced = doc[11]
        if replaced is not None and current.get((doc[0], doc[2])) == replaced[0]:
            found.append((doc[0], doc[1], doc[2], replaced[1]))
        else:
            unknown.append(doc[:3])
    return found + _stored_search_rows(conn, unknown)


def _delete_search_rows(conn: sqlite3.Connection, rows: list[tuple[str, str, str, SearchRows]]) -> None:
    conn.executemany(
        "DELETE FROM search_keys WHERE tenant = ? AND key = ? AND type = ? AND id = ?",
        [(tenant, key, rtype, rid) for tenant, rtype, rid, (keys, _) in rows for key in keys],
    )
    conn.executemany(
        "DELETE FROM search_dates WHERE tenant = ? AND type = ? AND param = ? AND low = ? AND high = ? "
        "AND id = ?",
        [(tenant, rtype, p, lo, hi, rid) for tenant, rtype, rid, (_, dates) in rows for p, lo, hi in dates],
    )


def _connect(path: Path, busy_timeout: float, read_only: bool = False) -> sqlite3.Connection:
    if read_only:
        return _connect_read_only(path, busy_timeout)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            # Health data: readable by the service's user only (SQLite gives its -wal and -shm
            # files the database file's permissions).
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except OSError as err:
        raise ConfigError(f"cannot create the store database {path}: {err.strerror}") from err

    def configured() -> tuple[sqlite3.Connection, str]:
        # isolation_level=None: no implicit transactions; ours are explicit BEGIN IMMEDIATE.
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous = FULL")
            # 40 MB of WAL between checkpoints (default 4 MB): a bulk load checkpoints 10x less often.
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
            # 16 MB of page cache (default 2 MB): the search index's B-trees take random-order
            # keys (ids, codes), and with the default most inserts miss the cache.
            conn.execute("PRAGMA cache_size = -16384")
        except BaseException:
            conn.close()
            raise
        return conn, mode

    conn, mode = _while_locked(configured, path, busy_timeout)
    if mode != "wal":
        conn.close()
        raise ConfigError(f"{path}: SQLite refused WAL mode ({mode}); is it on a network file system?")
    return conn


def _while_locked(
    open_configured: Callable[[], tuple[sqlite3.Connection, str]], path: Path, busy_timeout: float
) -> tuple[sqlite3.Connection, str]:
    """Open, retrying while the database is locked. SQLite does not always wait on its busy
    handler while a connection is opened and set up: a process starting while another recovers
    the WAL of a killed one got "database is locked" at once (the crash campaign saw a worker
    exit so), where it should wait as any later statement does."""
    deadline = time.monotonic() + busy_timeout
    pause = 0.01
    while True:
        try:
            return open_configured()
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err):
                raise ConfigError(f"{path} is not a usable SQLite database ({err})") from err
            if time.monotonic() + pause > deadline:
                raise StoreUnavailable(f"SQLite: {path} stayed locked for {busy_timeout:g} s") from err
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"{path} is not a usable SQLite database ({err})") from err


def _connect_read_only(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection that cannot change the database (``query_only``). Not ``mode=ro``: a
    read-only WAL reader cannot recover a -wal left by a crash, and a plain connection that
    writes nothing leaves the file as it was (SQLite removes the -wal and -shm it made when
    the last connection closes)."""

    def configured() -> tuple[sqlite3.Connection, str]:
        conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA query_only = ON")
            return conn, conn.execute("PRAGMA journal_mode").fetchone()[0]
        except BaseException:
            conn.close()
            raise

    conn, mode = _while_locked(configured, path, busy_timeout)
    if mode != "wal":
        conn.close()
        raise ConfigError(f"{path} is not a dropzone store (journal mode {mode})")
    return conn


def _json(value: Any) -> str:
    """A ledger record (file, upload) as text."""
    return orjson.dumps(value, default=str).decode()


def _document(row: Sequence[Any]) -> dict[str, Any]:
    """(tenant, type, id, version, hash, file_sha256, first, last, body) -> a stored document."""
    tenant, _rtype, rid, version, digest, file_sha, first, last, body = row
    doc = _resource(version, last, body)
    doc["_id"] = f"{tenant}/{rid}"
    doc[META_KEY] = {
        "tenant": tenant,
        "hash": digest,
        "version": version,
        "file_sha256": file_sha,
        "first_ingested": first,
        "last_ingested": last,
    }
    return doc


def _resource(version: int, last_ingested: str, body: str | bytes) -> dict[str, Any]:
    """The stored resource: ``body`` is the resource as received (numbers exact), as text or
    packed (``_column``); the server's ``meta.versionId``/``lastUpdated`` come from the row's
    columns. (Rows written before this rule hold them in ``body`` too, with the same values.)"""
    return with_server_meta(_parsed(body), version, last_ingested)


def _parsed(body: str | bytes) -> Any:
    """A ``body`` column's value, text or packed, as the resource (numbers exact)."""
    return fhir_json.loads(packing.unpack(body))


def _column(body: bytes) -> str | bytes:
    """A body as the ``body`` column holds it: JSON as TEXT (readable with ``sqlite3``), a
    packed one as a BLOB (the column's TEXT affinity leaves a BLOB as it is)."""
    return body if packing.is_packed(body) else body.decode()


# tenant, type, id, version, hash, file_sha256, first_ingested, last_ingested, body, identifiers,
# search rows, (hash, search rows) of the version it replaces when the writer knew them
_Row = tuple[
    str,
    str,
    str,
    int,
    str,
    str | None,
    str,
    str,
    str | bytes,
    list[tuple[str, str]],
    SearchRows,
    tuple[str, SearchRows] | None,
]

_BY_ID = operator.itemgetter(2)  # of a _Row
_BY_KEY = operator.itemgetter(1)  # of a search_keys row
_COLUMNS = "tenant, type, id, version, hash, file_sha256, first_ingested, last_ingested, body"


def _chunks(items: Sequence[str], size: int = _IN_CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SqliteResourceStore(ResourceStore):
    packs_bodies = True

    def __init__(self, db: Database) -> None:
        self._db = db

    def ensure_indexes(self) -> None:
        """Created with the schema."""

    @contextlib.contextmanager
    def _batch(self, durable: bool = True) -> Iterator[None]:
        # One transaction per batch; COMMIT itself can fail (disk full), so translate here too.
        try:
            with self._db.write(durable):
                yield
        except sqlite3.Error as err:
            raise StoreUnavailable(f"SQLite: {err}") from err

    @_translated
    def change_token(self) -> object | None:
        return self._db.read("PRAGMA data_version")[0][0]

    @_translated
    def existing(self, tenant: str, rtype: str, ids: Sequence[str]) -> dict[str, Existing]:
        found: dict[str, Existing] = {}
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            rows = self._db.read(
                "SELECT id, hash, version, file_sha256, first_ingested FROM resources "
                f"WHERE tenant = ? AND type = ? AND id IN ({marks})",
                (tenant, rtype, *chunk),
            )
            for rid, digest, version, file_sha, first in rows:
                found[rid] = Existing(digest, version, file_sha, first)
        return found

    def _new_document(
        self, tenant: str, write: ResourceWrite, version: int, file_sha256: str | None, now: str, first: str
    ) -> _Row:
        # The text the pipeline's workers made, stored as is: no dict, no second serialisation.
        return (
            tenant,
            write.type,
            write.id,
            version,
            write.hash,
            file_sha256,
            first,
            now,
            _column(write.stored_body()),
            write.identifier_rows(),
            write.search_rows(),
            write.replaces,
        )

    @_translated
    def _write_documents(self, rtype: str, docs: list[_Row], history: list[tuple[str, int]]) -> set[str]:
        with self._db.write() as conn:
            if history:
                conn.executemany(
                    f"INSERT OR IGNORE INTO history ({_COLUMNS}) SELECT {_COLUMNS} FROM resources "
                    "WHERE tenant = ? AND type = ? AND id = ?",
                    [_identity(doc_id, rtype) for doc_id, _ in history],
                )
            if not docs:
                return set()
            rows = [doc[:9] for doc in docs]
            # A first version has no identifier rows to replace (a delete removes them).
            identities = [doc[:3] for doc in docs if doc[3] != 1]
            identifiers = [(doc[0], rtype, value, system, doc[2]) for doc in docs for value, system in doc[9]]
            # The index rows of the versions being replaced, from their bodies (the index has no
            # owner index: it would double every insert's cost).
            old_rows = _replaced_search_rows(conn, [doc for doc in docs if doc[3] != 1])
            conn.executemany(
                f"INSERT INTO resources ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, type, id) DO UPDATE SET version = excluded.version, "
                "hash = excluded.hash, file_sha256 = excluded.file_sha256, "
                "first_ingested = excluded.first_ingested, last_ingested = excluded.last_ingested, "
                "body = excluded.body",
                rows,
            )
            if identities:
                conn.executemany(
                    "DELETE FROM identifiers WHERE tenant = ? AND type = ? AND id = ?", identities
                )
                _delete_search_rows(conn, old_rows)
            conn.executemany("INSERT OR IGNORE INTO identifiers VALUES (?, ?, ?, ?, ?)", identifiers)
            # In (key, id) order: neighbouring keys share B-tree pages, so a batch dirties fewer
            # of them. One tenant and type per call: docs by id, then a stable sort by key gives
            # that order at 0.6x the cost of comparing whole rows.
            key_rows = [
                (doc[0], key, rtype, doc[2]) for doc in sorted(docs, key=_BY_ID) for key in doc[10][0]
            ]
            key_rows.sort(key=_BY_KEY)
            conn.executemany("INSERT OR IGNORE INTO search_keys VALUES (?, ?, ?, ?)", key_rows)
            conn.executemany(
                "INSERT OR IGNORE INTO search_dates VALUES (?, ?, ?, ?, ?, ?)",
                sorted(
                    (doc[0], rtype, param, low, high, doc[2])
                    for doc in docs
                    for param, low, high in doc[10][1]
                ),
            )
        # The read (``existing``) and this write share the upsert's transaction: no other writer
        # in between (the loader checks its own earlier lookups with ``change_token``).
        return set()

    @_translated
    def _delete_document(self, rtype: str, doc_id: str) -> bool:
        tenant, rid = doc_id.split("/", 1)
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM identifiers WHERE tenant = ? AND type = ? AND id = ?", (tenant, rtype, rid)
            )
            _delete_search_rows(conn, _stored_search_rows(conn, [(tenant, rtype, rid)]))
            cursor = conn.execute(
                "DELETE FROM resources WHERE tenant = ? AND type = ? AND id = ?", (tenant, rtype, rid)
            )
            return cursor.rowcount == 1

    @_translated
    def get_document(self, tenant: str, rtype: str, resource_id: str) -> dict[str, Any] | None:
        rows = self._db.read(
            f"SELECT {_COLUMNS} FROM resources WHERE tenant = ? AND type = ? AND id = ?",
            (tenant, rtype, resource_id),
        )
        return _document(rows[0]) if rows else None

    @_translated
    def written_by(
        self, tenant: str, rtype: str, ids: Sequence[str], file_sha256: str
    ) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            rows = self._db.read(
                f"SELECT id, hash FROM history WHERE tenant = ? AND type = ? AND id IN ({marks}) "
                "AND file_sha256 = ?",
                (tenant, rtype, *chunk, file_sha256),
            )
            found.update((rid, digest) for rid, digest in rows)
        return found

    @_translated
    def history(self, tenant: str, rtype: str, resource_id: str) -> list[dict[str, Any]]:
        rows = self._db.read(
            f"SELECT {_COLUMNS} FROM history WHERE tenant = ? AND type = ? AND id = ? ORDER BY version",
            (tenant, rtype, resource_id),
        )
        return [_document(row) for row in rows]

    @_translated
    def find_by_identifier(self, tenant: str, rtype: str, system: str | None, value: str) -> list[str]:
        sql = "SELECT DISTINCT id FROM identifiers WHERE tenant = ? AND type = ? AND value = ?"
        params: list[Any] = [tenant, rtype, value]
        if system is not None:
            sql += " AND system = ?"
            params.append(system)
        return sorted(row[0] for row in self._db.read(sql, params))

    @_translated
    def counts(self, tenants: Iterable[str] | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for per_type in self.tenant_counts(tenants).values():
            for rtype, n in per_type.items():
                out[rtype] = out.get(rtype, 0) + n
        return dict(sorted(out.items()))

    @_translated
    def tenant_counts(self, tenants: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        rows = self._db.read("SELECT tenant, type, count(*) FROM resources GROUP BY tenant, type")
        wanted = set(tenants) if tenants is not None else None
        out: dict[str, dict[str, int]] = {}
        for tenant, rtype, n in rows:
            if wanted is None or tenant in wanted:
                out.setdefault(tenant, {})[rtype] = n
        return out

    @_translated
    def resource_types(self) -> list[str]:
        return [row[0] for row in self._db.read("SELECT DISTINCT type FROM resources ORDER BY type")]

    def iter_resources(self, tenant: str, rtype: str, since: str | None = None) -> Iterator[dict[str, Any]]:
        # Keyset pages: bounded memory, and the lock is held per page, not for the whole export.
        after = ""
        while True:
            page = self._page(tenant, rtype, since, after)
            if not page:
                return
            for _rid, version, last, body in page:
                yield _resource(version, last, body)
            after = page[-1][0]

    @_translated
    def _page(self, tenant: str, rtype: str, since: str | None, after: str) -> list[tuple[Any, ...]]:
        sql = (
            "SELECT id, version, last_ingested, body FROM resources WHERE tenant = ? AND type = ? AND id > ?"
        )
        params: list[Any] = [tenant, rtype, after]
        if since is not None:
            sql += " AND last_ingested >= ?"
            params.append(since)
        return self._db.read(sql + " ORDER BY id LIMIT 500", params)

    @_translated
    def search(self, tenant: str, query: SearchQuery) -> SearchPage:
        rows, total = sqlite_search.search(self._db.read, tenant, query)
        page = SearchPage(
            [_resource(version, last, body) for _rid, version, last, body in rows[: query.count]], total
        )
        if len(rows) > query.count:
            rid, _version, last, _body = rows[query.count - 1]
            page.after = (last, rid) if query.sort == "_lastUpdated" else (rid,)
        return page

    @_translated
    def keyed(self, tenant: str, keys: Sequence[str], types: Iterable[str]) -> list[tuple[str, str, str]]:
        wanted = set(types)
        found: list[tuple[str, str, str]] = []
        for chunk in _chunks(list(keys)):
            marks = ",".join("?" * len(chunk))
            rows = self._db.read(
                f"SELECT type, id, key FROM search_keys WHERE tenant = ? AND key IN ({marks})",
                (tenant, *chunk),
            )
            found += [row for row in rows if row[0] in wanted]
        return found

    @_translated
    def keys_present(self, tenant: str, keys: Sequence[str], types: Iterable[str]) -> set[str]:
        # DISTINCT on the primary key's prefix: one row per key, however many hold it.
        found: set[str] = set()
        for chunk in _chunks(list(keys)):
            marks = ",".join("?" * len(chunk))
            rows = self._db.read(
                f"SELECT DISTINCT key FROM search_keys WHERE tenant = ? AND key IN ({marks})",
                (tenant, *chunk),
            )
            found.update(row[0] for row in rows)
        return found

    def reference_keys(self, tenant: str) -> Iterator[tuple[str, str, str]]:
        after: tuple[str, str, str] = (REF_PREFIX, "", "")
        while True:
            # '>' sorts just before '?': the reference keys are one range of the primary key.
            rows = self._db.read(
                "SELECT key, type, id FROM search_keys WHERE tenant = ? AND key < ? "
                "AND (key, type, id) > (?, ?, ?) ORDER BY key, type, id LIMIT 2000",
                (tenant, chr(ord(REF_PREFIX) + 1), *after),
            )
            if not rows:
                return
            for key, rtype, rid in rows:
                yield rtype, rid, key
            after = rows[-1]

    @_translated
    def get_many(self, tenant: str, rtype: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(list(ids)):
            rows = self._db.read(
                "SELECT id, version, last_ingested, body FROM resources WHERE tenant = ? AND type = ? "
                f"AND id IN ({','.join('?' * len(chunk))})",
                (tenant, rtype, *chunk),
            )
            found.update((rid, _resource(version, last, body)) for rid, version, last, body in rows)
        return found

    def close(self) -> None:
        """The database is closed by SqliteStore."""


def _identity(doc_id: str, rtype: str) -> tuple[str, str, str]:
    tenant, rid = doc_id.split("/", 1)
    return tenant, rtype, rid


class SqliteLedger(Ledger):
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    _CLAIM_COLUMNS = "key, state, owner, lease_until, path, attempt, file_id, outcome, destination, moved"

    def _claim_row(self, conn: sqlite3.Connection, key: str) -> dict[str, Any] | None:
        row = conn.execute(f"SELECT {self._CLAIM_COLUMNS} FROM claims WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        names = ["_id", *self._CLAIM_COLUMNS.split(", ")[1:]]
        doc = dict(zip(names, row, strict=True))
        doc["moved"] = bool(doc["moved"])
        return doc

    def _put_claim(self, conn: sqlite3.Connection, doc: dict[str, Any]) -> None:
        conn.execute(
            f"INSERT OR REPLACE INTO claims ({self._CLAIM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                doc["_id"],
                doc["state"],
                doc["owner"],
                doc["lease_until"],
                doc["path"],
                doc["attempt"],
                doc["file_id"],
                doc["outcome"],
                doc["destination"],
                int(bool(doc["moved"])),
            ),
        )

    @_translated
    def claim(self, tenant: str, sha256: str, path: str, owner: str, lease_seconds: float) -> ClaimAnswer:
        key = claim_key(tenant, sha256)
        with self._db.write() as conn:
            now = self._clock()
            doc = self._claim_row(conn, key)
            if doc is None:
                doc = new_claim_document(key, path, owner, now + lease_seconds)
                self._put_claim(conn, doc)
                return ClaimAnswer(ClaimState.ACQUIRED, claim_from_document(doc, resumed=False))
            if doc["state"] == "processing" and doc["lease_until"] < now:
                doc.update(
                    owner=owner, lease_until=now + lease_seconds, path=path, attempt=doc["attempt"] + 1
                )
                self._put_claim(conn, doc)
                return ClaimAnswer(ClaimState.ACQUIRED, claim_from_document(doc, resumed=True))
            if doc["state"] == "done" and doc["outcome"] == "quarantined":
                fresh = new_claim_document(key, path, owner, now + lease_seconds)
                fresh["attempt"] = doc["attempt"] + 1
                self._put_claim(conn, fresh)
                return ClaimAnswer(ClaimState.ACQUIRED, claim_from_document(fresh, resumed=False))
            if doc["state"] == "processing":
                return ClaimAnswer(ClaimState.BUSY)
            return ClaimAnswer(ClaimState.DONE, done=doc)

    @_translated
    def finished_claim(self, tenant: str, sha256: str) -> dict[str, Any] | None:
        with self._db.reading() as conn:
            doc = self._claim_row(conn, claim_key(tenant, sha256))
        return doc if doc and doc["state"] == "done" and doc["outcome"] != "quarantined" else None

    @staticmethod
    def _owned(claim: Claim) -> tuple[str, str, int]:
        return claim.key, claim.owner, claim.attempt

    _OWNED = "key = ? AND state = 'processing' AND owner = ? AND attempt = ?"

    @_translated
    def renew(self, claim: Claim, lease_seconds: float) -> bool:
        with self._db.write() as conn:
            cursor = conn.execute(
                f"UPDATE claims SET lease_until = ? WHERE {self._OWNED}",
                (self._clock() + lease_seconds, *self._owned(claim)),
            )
            return cursor.rowcount == 1

    @_translated
    def release(self, claim: Claim) -> None:
        with self._db.write() as conn:
            conn.execute(f"UPDATE claims SET lease_until = 0.0 WHERE {self._OWNED}", self._owned(claim))

    @_translated
    def complete(self, claim: Claim, outcome: str, destination: str | None) -> bool:
        with self._db.write() as conn:
            cursor = conn.execute(
                "UPDATE claims SET state = 'done', outcome = ?, destination = ?, moved = 0 "
                f"WHERE {self._OWNED}",
                (outcome, destination, *self._owned(claim)),
            )
            return cursor.rowcount == 1

    @_translated
    def mark_moved(self, key: str) -> None:
        with self._db.write() as conn:
            conn.execute("UPDATE claims SET moved = 1 WHERE key = ?", (key,))

    @_translated
    def save_file(self, record: dict[str, Any]) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO files (id, tenant, key, state, received_at, record) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record["_id"],
                    record.get("tenant"),
                    record.get("key"),
                    record.get("state"),
                    record.get("received_at"),
                    _json(record),
                ),
            )

    @_translated
    def get_file(self, file_id: str) -> dict[str, Any] | None:
        rows = self._db.read("SELECT record FROM files WHERE id = ?", (file_id,))
        return orjson.loads(rows[0][0]) if rows else None

    @_translated
    def files(self, tenant: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        if tenant is None:
            rows = self._db.read("SELECT record FROM files ORDER BY received_at DESC LIMIT ?", (limit,))
        else:
            rows = self._db.read(
                "SELECT record FROM files WHERE tenant = ? ORDER BY received_at DESC LIMIT ?", (tenant, limit)
            )
        return [orjson.loads(row[0]) for row in rows]

    @_translated
    def summary(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        sql = "SELECT coalesce(tenant, '?'), coalesce(state, '?'), count(*) FROM files GROUP BY 1, 2"
        for tenant, state, n in self._db.read(sql + " ORDER BY 1, 2"):
            out.setdefault(tenant, {})[state] = n
        return out

    @_translated
    def find_file(self, key: str) -> dict[str, Any] | None:
        rows = self._db.read(
            "SELECT record FROM files WHERE key = ? ORDER BY received_at DESC LIMIT 1", (key,)
        )
        return orjson.loads(rows[0][0]) if rows else None

    @_translated
    def save_upload(self, record: dict[str, Any]) -> None:
        with self._db.write() as conn:
            conn.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?)", (record["_id"], _json(record)))

    @_translated
    def get_upload(self, upload_id: str) -> dict[str, Any] | None:
        rows = self._db.read("SELECT record FROM uploads WHERE id = ?", (upload_id,))
        return orjson.loads(rows[0][0]) if rows else None


class SqliteStore(Store):
    persistent = True

    def __init__(
        self, path: str | os.PathLike[str], busy_timeout: float = 60.0, *, read_only: bool = False
    ) -> None:
        """``busy_timeout``: how long a write waits for another process's transaction;
        ``read_only``: see ``dropzone.store.open_store``."""
        self.path = Path(path)
        self.database = Database(self.path, busy_timeout, read_only)
        self.description = f"SQLite database {self.path}"
        self.resources = SqliteResourceStore(self.database)
        self.ledger = SqliteLedger(self.database)

    def close(self) -> None:
        self.database.close()
