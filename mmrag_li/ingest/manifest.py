"""SQLite manifest of ingested files: what is stored, from which bytes, under which node ids.

It makes ingestion idempotent and crash-safe:

* a file is marked ``pending`` (with the node ids it is about to write) before its nodes reach
  the stores, and ``done`` only after the batch holding them is committed. A run killed at any
  moment leaves ``pending`` rows that the next run redoes; node ids are deterministic, so redoing
  upserts instead of duplicating.
* when a file's content changes, the asset id it had (and any asset a crashed run was writing)
  is kept in ``prev_assets`` until the new nodes are stored and the old ones deleted, so a kill
  between "write new" and "delete old" can never orphan the old nodes.
* a ``failed`` row keeps the asset id and node ids of the version that is still in the store
  (the store and the manifest always agree on which node ids exist), so ``prune`` and a later
  successful run can still remove them.

Every write is one SQLite transaction (WAL journal). A manifest file that SQLite cannot read is
reported as :class:`ManifestCorruptError` naming the file; ``ingest.recovery.open_manifest`` then
moves it aside and rebuilds the manifest from the stores.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence
from urllib.parse import quote

from mmrag_li.errors import MMRAGError

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    source      TEXT PRIMARY KEY,
    asset_id    TEXT,
    size        INTEGER,
    mtime       REAL,
    status      TEXT NOT NULL,          -- pending | done | failed
    node_ids    TEXT NOT NULL DEFAULT '[]',
    reason      TEXT,
    updated_at  REAL NOT NULL,
    collection  TEXT,
    prev_assets TEXT NOT NULL DEFAULT '[]',
    config      TEXT                    -- fingerprint of the settings that shaped the nodes
);
CREATE INDEX IF NOT EXISTS files_asset ON files(asset_id);
CREATE INDEX IF NOT EXISTS files_status ON files(status);
"""
# Columns added after the first release, with their SQL definitions (migrated on open).
_ADDED_COLUMNS = {"collection": "TEXT", "prev_assets": "TEXT NOT NULL DEFAULT '[]'", "config": "TEXT"}
_COLS = "source, asset_id, size, mtime, status, node_ids, reason, collection, prev_assets, config"


class ManifestCorruptError(MMRAGError):
    """The manifest database cannot be read; names the file and how to recover."""

    def __init__(self, path: str | Path, detail: str):
        self.path = str(path)
        self.detail = detail
        super().__init__(
            f"manifest {self.path} is corrupt ({detail}); move it aside and run `mmrag ingest` again: "
            "it is rebuilt from the stores (MultiModalRAG does this automatically)")



def status_counts(store_dir: str | Path) -> Dict[str, int]:
    """Files per status, read without opening the manifest for writing: a read-only peek at a
    store that another process may be ingesting into (WAL lets readers in); {} if unreadable.

    Args:
        store_dir: the store directory.
    """
    db = Path(store_dir) / "manifest.sqlite"
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return dict(con.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall())
        finally:
            con.close()
    except sqlite3.Error:
        return {}


@dataclass
class FileRecord:
    """One manifest row: a file and what of it is stored.

    Args:
        source: the resolved path (the key).
        asset_id: the asset its nodes belong to (collection-scoped content hash).
        size: size in bytes when recorded (-1: unknown, rebuilt from the stores).
        mtime: mtime when recorded (-1.0: unknown).
        status: ``pending`` (being written), ``done`` or ``failed``.
        node_ids: the node ids the stores hold for it.
        reason: why it failed (``failed`` rows).
        collection: the collection it was ingested into.
        prev_assets: assets whose nodes may still be stored on its behalf (until ``mark_done``).
        config: fingerprint of the settings that shaped its nodes.
    """

    source: str
    asset_id: Optional[str]
    size: int
    mtime: float
    status: str
    node_ids: List[str]
    reason: Optional[str]
    collection: Optional[str] = None
    prev_assets: List[str] = field(default_factory=list)
    config: Optional[str] = None

    def stale_assets(self) -> List[str]:
        """Asset ids whose nodes may be in the store on behalf of this file (current first)."""
        out = [self.asset_id] if self.asset_id else []
        return out + [a for a in self.prev_assets if a and a not in out]


class Manifest:
    """The manifest of one store. On a read-only store (mount, permissions) it opens read-only
    (``read_only``): every read works, every write raises :class:`MMRAGError`."""

    def __init__(self, path: str | Path, check: bool = True):
        self.path = Path(path)
        self._lock = threading.RLock()
        self.read_only = False
        self._cols = _COLS
        writable = os.access(self.path.parent, os.W_OK) if self.path.parent.exists() else True
        if self.path.exists() and not (writable and os.access(self.path, os.W_OK)):
            self._open_read_only(check)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=60,
                                       isolation_level=None)
        except sqlite3.Error as exc:
            raise MMRAGError(f"cannot open manifest {self.path}: {exc}") from exc
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA secure_delete=ON")  # removed rows (paths) are overwritten, not left in free pages
            if check:
                self._quick_check()
            self._db.executescript(SCHEMA)
            self._migrate()
        except ManifestCorruptError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._db.close()
            msg = str(exc)
            if "readonly" in msg or "unable to open" in msg:
                raise MMRAGError(f"cannot write manifest {self.path}: {msg}") from exc
            raise ManifestCorruptError(self.path, msg) from exc

    def _open_read_only(self, check: bool) -> None:
        # immutable=1: no locks, no WAL/shm files (none can be created here, and nobody can write).
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro&immutable=1"
        try:
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
            if check:
                self._quick_check()
            have = {r[1] for r in self._db.execute("PRAGMA table_info(files)")}
        except ManifestCorruptError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            raise ManifestCorruptError(self.path, str(exc)) from exc
        self.read_only = True
        self._cols = ", ".join(c if c in have else f"NULL AS {c}" for c in _COLS.split(", "))

    def _quick_check(self) -> None:
        rows = self._db.execute("PRAGMA quick_check").fetchall()
        if rows and rows[0][0] != "ok":
            lines = [ln for r in rows for ln in str(r[0]).splitlines() if ln.strip()]
            detail = "; ".join(lines[:3]) + (f"; ... {len(lines) - 3} more" if len(lines) > 3 else "")
            raise ManifestCorruptError(self.path, "integrity check failed: " + detail[:300])

    def _migrate(self) -> None:
        have = {r[1] for r in self._db.execute("PRAGMA table_info(files)")}
        for col, decl in _ADDED_COLUMNS.items():
            if col not in have:
                self._db.execute(f"ALTER TABLE files ADD COLUMN {col} {decl}")

    # ---- reads ---------------------------------------------------------------------------
    def get(self, source: str) -> Optional[FileRecord]:
        """The row of a file, or None.

        Args:
            source: the resolved path.
        """
        with self._lock:
            row = self._db.execute(f"SELECT {self._cols} FROM files WHERE source=?", (source,)).fetchone()
        return self._record(row) if row else None

    def by_asset(self, asset_id: str) -> List[FileRecord]:
        """Every row whose current asset is ``asset_id`` (the same bytes under several paths).

        Args:
            asset_id: an asset id.
        """
        with self._lock:
            rows = self._db.execute(f"SELECT {self._cols} FROM files WHERE asset_id=?", (asset_id,)).fetchall()
        return [self._record(r) for r in rows]

    def all(self, status: Optional[str] = None) -> List[FileRecord]:
        """Every row, or those with ``status``.

        Args:
            status: ``pending``, ``done``, ``failed`` or None for all.
        """
        q = f"SELECT {self._cols} FROM files"
        with self._lock:
            rows = self._db.execute(q + (" WHERE status=?" if status else ""), (status,) if status else ()).fetchall()
        return [self._record(r) for r in rows]

    def counts(self) -> Dict[str, int]:
        """Rows per status."""
        with self._lock:
            return dict(self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall())

    def known_assets(self) -> set:
        """Every asset id the manifest mentions (current or previous, any status)."""
        out = set()
        for rec in self.all():
            out.update(rec.stale_assets())
        return out

    def done_assets(self, config: Optional[str] = None) -> Dict[str, List[str]]:
        """asset_id -> node ids, for files whose nodes are committed (made with ``config``, if given)."""
        out: Dict[str, List[str]] = {}
        for rec in self.all("done"):
            if rec.asset_id and (config is None or rec.config in (None, config)):
                out.setdefault(rec.asset_id, [])
                out[rec.asset_id] = sorted(set(out[rec.asset_id]) | set(rec.node_ids))
        return out

    def expected_nodes(self) -> Dict[str, set]:
        """asset_id -> node ids the stores should hold (done and failed rows that track nodes)."""
        out: Dict[str, set] = {}
        for rec in self.all():
            if rec.asset_id and rec.status in ("done", "failed") and rec.node_ids:
                out.setdefault(rec.asset_id, set()).update(rec.node_ids)
        return out

    @staticmethod
    def _record(row) -> FileRecord:
        return FileRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5] or "[]"), row[6],
                          row[7], json.loads(row[8] or "[]"), row[9])

    # ---- writes (each call is one transaction) ----------------------------------------------
    def _tx(self, fn) -> None:
        if self.read_only:
            raise MMRAGError(f"manifest {self.path} is read-only (read-only store); nothing was changed")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                fn()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def mark_pending(self, entries: Iterable[Sequence]) -> None:
        """Rows about to be written (one transaction). An asset id a row had before (and that
        differs from the new one) moves to ``prev_assets``: its nodes stay tracked until ``mark_done``.

        Args:
            entries: ``(source, asset_id, size, mtime, node_ids[, collection[, config]])`` tuples.
        """
        entries = list(entries)
        now = time.time()

        def run() -> None:
            for e in entries:
                source, asset_id, size, mtime, ids = e[:5]
                collection = e[5] if len(e) > 5 else None
                config = e[6] if len(e) > 6 else None
                old = self._db.execute("SELECT asset_id, prev_assets FROM files WHERE source=?",
                                       (source,)).fetchone()
                prev: List[str] = json.loads(old[1] or "[]") if old else []
                if old and old[0] and old[0] != asset_id and old[0] not in prev:
                    prev.append(old[0])
                prev = [a for a in prev if a != asset_id]
                self._db.execute(
                    f"INSERT OR REPLACE INTO files ({_COLS}, updated_at) VALUES (?, ?, ?, ?, 'pending', ?, NULL, ?, ?, ?, ?)",
                    (source, asset_id, size, mtime, json.dumps(list(ids)), collection, json.dumps(prev), config, now))

        self._tx(run)

    def mark_done(self, sources: Iterable[str]) -> None:
        """The batch's nodes are stored and every previous asset's leftovers deleted.

        Args:
            sources: the files of the batch.
        """
        now = time.time()
        rows = [(now, s) for s in sources]
        self._tx(lambda: self._db.executemany(
            "UPDATE files SET status='done', reason=NULL, prev_assets='[]', updated_at=? WHERE source=?", rows))

    def mark_failed(self, source: str, reason: str, asset_id: Optional[str] = None, size: int = 0,
                    mtime: float = 0.0, keep_nodes: bool = True, collection: Optional[str] = None) -> None:
        """Record a failure.

        Args:
            source: the file.
            reason: why it failed.
            asset_id: its asset id, if known (rows that do not keep nodes).
            size: its size.
            mtime: its mtime.
            keep_nodes: the row keeps tracking the nodes of the version that is still stored (asset
                id, node ids, previous assets); otherwise they must already be deleted.
            collection: its collection (default: the row's).
        """
        now = time.time()

        def run() -> None:
            old = self._db.execute("SELECT asset_id, node_ids, prev_assets, collection FROM files WHERE source=?",
                                   (source,)).fetchone()
            if keep_nodes and old and (old[0] or old[2] not in (None, "[]")):
                self._db.execute(
                    "UPDATE files SET status='failed', reason=?, size=?, mtime=?, updated_at=? WHERE source=?",
                    (reason, size, mtime, now, source))
            else:
                self._db.execute(
                    f"INSERT OR REPLACE INTO files ({_COLS}, updated_at) VALUES (?, ?, ?, ?, 'failed', '[]', ?, ?, '[]', NULL, ?)",
                    (source, asset_id, size, mtime, reason, collection or (old[3] if old else None), now))

        self._tx(run)

    def touch(self, source: str, size: int, mtime: float) -> None:
        """Same bytes, new mtime (e.g. ``touch`` or a copy that kept the content).

        Args:
            source: the file.
            size: its size.
            mtime: its new mtime.
        """
        self._tx(lambda: self._db.execute("UPDATE files SET size=?, mtime=?, updated_at=? WHERE source=?",
                                          (size, mtime, time.time(), source)))

    def remove(self, source: str) -> None:
        """Forget a file (its nodes must already be deleted).

        Args:
            source: the file.
        """
        self._tx(lambda: self._db.execute("DELETE FROM files WHERE source=?", (source,)))

    def rename(self, old: str, new: str) -> bool:
        """Re-key a row (``ingest.sources.source_key`` changed, e.g. ``ingest.redact_pii`` was turned
        on); False when ``old`` has no row or ``new`` already has one.

        Args:
            old: the current key.
            new: the new key.
        """
        done: List[bool] = []

        def run() -> None:
            if not self._db.execute("SELECT 1 FROM files WHERE source=?", (new,)).fetchone():
                done.append(self._db.execute("UPDATE files SET source=? WHERE source=?", (new, old)).rowcount > 0)

        self._tx(run)
        return bool(done and done[0])

    def scrub(self) -> None:
        """Checkpoint and truncate the write-ahead log, so removed or re-keyed rows leave no copy
        in ``manifest.sqlite-wal`` (rows are overwritten in the database itself: secure_delete)."""
        with self._lock:
            if not self.read_only:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


__all__ = ["FileRecord", "Manifest", "ManifestCorruptError", "status_counts"]
