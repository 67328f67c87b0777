"""The SQLite store: runs, their items, and every successful answer by request key.

Writes are buffered and committed in small transactions by `flush()`, which the
runner calls from a worker thread as soon as a worker waits for its answer to be
committed, every fraction of a second for item rows, and on exit. So a killed
process loses at most the answers of the calls in flight.
Reads (`get`) use a second connection on the caller's thread. WAL mode and a
long busy timeout let several processes share one file; a write that still
finds the database locked is retried, so "database is locked" does not reach
the user.

The schema evolves through numbered migration functions (`_migration`); a file
written by an older version is migrated on open.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlite_utils

from ai_module.errors import StoreError
from ai_module.providers.base import Usage

__all__ = ["Store", "StoredItem"]

logger = logging.getLogger(__name__)

_BUSY_TIMEOUT_MS = 60_000
_LOCKED_RETRIES = 20
_MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = []


def _migration(function: Callable[[sqlite_utils.Database], None]) -> Callable:
    _MIGRATIONS.append((function.__name__, function))
    return function


@_migration
def m001_runs_and_responses(db: sqlite_utils.Database) -> None:
    db["runs"].create(
        {
            "id": str,
            "task": str,
            "provider": str,
            "model": str,
            "status": str,
            "started_at": float,
            "finished_at": float,
            "total": int,
            "succeeded": int,
            "failed": int,
            "from_store": int,
            "run_dir": str,
            "input": str,
        },
        pk="id",
    )
    db["responses"].create(
        {
            "request_key": str,
            "output": str,
            "prompt_tokens": int,
            "completion_tokens": int,
            "created_at": float,
        },
        pk="request_key",
    )


@_migration
def m002_items(db: sqlite_utils.Database) -> None:
    db["items"].create(
        {
            "run_id": str,
            "idx": int,
            "request_key": str,
            "status": str,
            "error": str,
            "attempts": int,
        },
        pk=("run_id", "idx"),
    )


@_migration
def m003_run_tokens(db: sqlite_utils.Database) -> None:
    db["runs"].add_column("prompt_tokens", int)
    db["runs"].add_column("completion_tokens", int)
    db["runs"].create_index(["started_at"])


@_migration
def m004_run_process(db: sqlite_utils.Database) -> None:
    # Lets `aimod runs` tell a run still going from one that was killed.
    db["runs"].add_column("pid", int)
    db["runs"].add_column("host", str)
    db["runs"].add_column("estimated_cost", float)


def _rollback(connection: sqlite3.Connection) -> None:
    # SQLite has already rolled back after some errors (SQLITE_FULL, say), and
    # a second ROLLBACK would replace that error with "no transaction is active".
    if connection.in_transaction:
        connection.execute("ROLLBACK")


@dataclass(frozen=True)
class StoredItem:
    """One item row, as the store keeps it."""

    run_id: str
    index: int
    request_key: str | None
    status: str
    error: str | None
    attempts: int


class Store:
    """One SQLite file shared by runs and processes; see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._reader = self._connect(check_same_thread=True)
            self._writer = self._connect(check_same_thread=False)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            if "not a database" not in str(exc):
                raise self._open_error(exc) from None
            raise StoreError(
                f"{self.path} is not an aimod store (not a SQLite file). Choose "
                "another file with store=PATH, or move this one away."
            ) from None
        except (OSError, sqlite3.Error) as exc:
            raise self._open_error(exc) from None
        self._lock = threading.Lock()
        # put() and record_item() run on the event loop while flush() runs in a
        # worker thread: flush swaps these containers out instead of sharing them.
        self._pending_responses: dict[str, tuple] = {}
        self._flushing_responses: dict[str, tuple] = {}
        self._pending_items: list[tuple] = []

    def _open_error(self, exc: BaseException) -> StoreError:
        return StoreError(
            f"cannot open the store {self.path}: {exc}. Check that the folder is "
            "writable, or choose another file with store=PATH."
        )

    def _connect(self, *, check_same_thread: bool) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            check_same_thread=check_same_thread,
            isolation_level=None,
        )
        connection.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        # While another process opens a new file for the first time, switching
        # it to WAL can fail with "database is locked" without waiting on the
        # busy timeout. So this one statement is retried here.
        for attempt in range(_LOCKED_RETRIES):
            try:
                connection.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == _LOCKED_RETRIES - 1:
                    connection.close()
                    raise
                time.sleep(min(1.0, 0.01 * 2**attempt))
        connection.execute("PRAGMA synchronous = NORMAL")
        return connection

    def _migrate(self) -> None:
        db = sqlite_utils.Database(self._writer)
        # BEGIN IMMEDIATE makes concurrent first opens wait for each other
        # instead of both creating the tables.
        self._writer.execute("BEGIN IMMEDIATE")
        try:
            if "_migrations" not in db.table_names():
                db["_migrations"].create({"name": str, "applied_at": float}, pk="name")
            done = {row["name"] for row in db["_migrations"].rows}
            for name, function in _MIGRATIONS:
                if name in done:
                    continue
                logger.info("migrating store %s: %s", self.path, name)
                function(db)
                db["_migrations"].insert({"name": name, "applied_at": time.time()})
            self._writer.execute("COMMIT")
        except BaseException:
            _rollback(self._writer)
            raise

    # -- answers by request key ------------------------------------------------

    def get(self, key: str) -> Any | None:
        """Return the stored validated answer for a request key, or None."""
        pending = self._pending_responses.get(key) or self._flushing_responses.get(key)
        if pending is not None:
            return orjson.loads(pending[1])
        try:
            row = self._reader.execute(
                "SELECT output FROM responses WHERE request_key = ?", (key,)
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the store {self.path}: {exc}") from None
        return None if row is None else orjson.loads(row[0])

    def put(self, key: str, output: Any, usage: Usage | None) -> None:
        """Buffer a successful answer; `flush()` commits it."""
        self._pending_responses[key] = (
            key,
            orjson.dumps(output).decode(),
            usage.prompt_tokens if usage else None,
            usage.completion_tokens if usage else None,
            time.time(),
        )

    # -- runs and items -----------------------------------------------------------

    def start_run(self, run_id: str, **fields: Any) -> None:
        row = {"id": run_id, "status": "running", "started_at": time.time(), **fields}
        self._write(lambda db: db["runs"].insert(row, replace=True))

    def finish_run(self, run_id: str, **fields: Any) -> None:
        fields.setdefault("finished_at", time.time())
        self.flush()
        self._write(lambda db: db["runs"].update(run_id, fields))

    def record_item(
        self,
        run_id: str,
        index: int,
        request_key: str | None,
        error: str | None,
        attempts: int,
    ) -> None:
        """Buffer an item's outcome; `flush()` commits it."""
        status = "ok" if error is None else "error"
        self._pending_items.append(
            (run_id, index, request_key, status, error, attempts)
        )

    def flush(self) -> int:
        """Commit buffered answers and items in one transaction; return the count.

        Safe to call from a worker thread while the event loop keeps buffering.
        """
        with self._lock:
            self._flushing_responses = self._pending_responses
            self._pending_responses = {}
            items, self._pending_items = self._pending_items, []
            responses = list(self._flushing_responses.values())
            if not responses and not items:
                return 0
            try:
                self._execute_locked_retry(self._insert_batch, responses, items)
            except BaseException:
                # Put the rows back so that a later flush can still commit them.
                self._pending_responses.update(self._flushing_responses)
                self._pending_items[:0] = items
                raise
            finally:
                self._flushing_responses = {}
            return len(responses) + len(items)

    def _insert_batch(self, responses: list[tuple], items: list[tuple]) -> None:
        connection = self._writer
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(
                "INSERT OR REPLACE INTO responses (request_key, output, prompt_tokens,"
                " completion_tokens, created_at) VALUES (?, ?, ?, ?, ?)",
                responses,
            )
            connection.executemany(
                "INSERT OR REPLACE INTO items (run_id, idx, request_key, status, error,"
                " attempts) VALUES (?, ?, ?, ?, ?, ?)",
                items,
            )
            connection.execute("COMMIT")
        except BaseException:
            _rollback(connection)
            raise

    def _write(self, action: Callable[[sqlite_utils.Database], Any]) -> None:
        def run() -> None:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                action(sqlite_utils.Database(self._writer))
                self._writer.execute("COMMIT")
            except BaseException:
                _rollback(self._writer)
                raise

        with self._lock:
            self._execute_locked_retry(run)

    def _execute_locked_retry(self, function: Callable[..., None], *args: Any) -> None:
        for attempt in range(_LOCKED_RETRIES):
            try:
                function(*args)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    # A full disk and a read-only file arrive here.
                    raise StoreError(
                        f"cannot write the store {self.path}: {exc}. Results "
                        "committed before this are kept; free space or fix "
                        "permissions, then run the same command again."
                    ) from None
                logger.warning(
                    "store %s is locked, retrying (%d)", self.path, attempt + 1
                )
                time.sleep(min(2.0, 0.05 * 2**attempt))
            except sqlite3.Error as exc:
                raise StoreError(
                    f"cannot write the store {self.path}: {exc}. Results committed "
                    "before this are kept; free space or fix permissions, then run "
                    "the same command again."
                ) from None
        raise StoreError(f"the store {self.path} stayed locked; try again later")

    # -- queries ------------------------------------------------------------------

    def runs(self, limit: int = 20) -> list[dict[str, Any]]:
        db = sqlite_utils.Database(self._reader)
        return list(db["runs"].rows_where(order_by="started_at desc", limit=limit))

    def run(self, run_id: str) -> dict[str, Any] | None:
        db = sqlite_utils.Database(self._reader)
        rows = list(db["runs"].rows_where("id = ? or run_dir = ?", [run_id, run_id]))
        return rows[0] if rows else None

    def item_counts(self, run_id: str) -> dict[str, int]:
        """Count a run's committed items by status ("ok", "error")."""
        rows = self._reader.execute(
            "SELECT status, count(*) FROM items WHERE run_id = ? GROUP BY status",
            (run_id,),
        )
        return dict(rows.fetchall())

    def items(self, run_id: str) -> Iterator[StoredItem]:
        cursor = self._reader.execute(
            "SELECT run_id, idx, request_key, status, error, attempts FROM items "
            "WHERE run_id = ? ORDER BY idx",
            (run_id,),
        )
        for row in cursor:
            yield StoredItem(*row)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._reader.close()
            self._writer.close()
