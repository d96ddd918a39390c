"""SQLite manifest of ingested files: what is stored, from which bytes, under which node ids.

It makes ingestion idempotent and crash-safe: a file is marked ``pending`` (with the node ids it
will write) before its nodes reach the stores and ``done`` after the batch that holds them is
committed. A run killed at any moment leaves pending rows that the next run redoes; node ids are
deterministic, so redoing upserts instead of duplicating.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    source      TEXT PRIMARY KEY,
    asset_id    TEXT,
    size        INTEGER,
    mtime       REAL,
    status      TEXT NOT NULL,          -- pending | done | failed
    node_ids    TEXT NOT NULL DEFAULT '[]',
    reason      TEXT,
    updated_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS files_asset ON files(asset_id);
"""


@dataclass
class FileRecord:
    source: str
    asset_id: Optional[str]
    size: int
    mtime: float
    status: str
    node_ids: List[str]
    reason: Optional[str]


class Manifest:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    # ---- reads ---------------------------------------------------------------------------
    def get(self, source: str) -> Optional[FileRecord]:
        with self._lock:
            row = self._db.execute(
                "SELECT source, asset_id, size, mtime, status, node_ids, reason FROM files WHERE source=?",
                (source,)).fetchone()
        return self._record(row) if row else None

    def by_asset(self, asset_id: str) -> List[FileRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT source, asset_id, size, mtime, status, node_ids, reason FROM files WHERE asset_id=?",
                (asset_id,)).fetchall()
        return [self._record(r) for r in rows]

    def all(self, status: Optional[str] = None) -> List[FileRecord]:
        q = "SELECT source, asset_id, size, mtime, status, node_ids, reason FROM files"
        with self._lock:
            rows = self._db.execute(q + (" WHERE status=?" if status else ""), (status,) if status else ()).fetchall()
        return [self._record(r) for r in rows]

    def counts(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT status, COUNT(*) FROM files GROUP BY status").fetchall())

    def done_assets(self) -> Dict[str, List[str]]:
        """asset_id -> node ids, for files whose nodes are committed."""
        out: Dict[str, List[str]] = {}
        for rec in self.all("done"):
            if rec.asset_id:
                out.setdefault(rec.asset_id, [])
                out[rec.asset_id] = sorted(set(out[rec.asset_id]) | set(rec.node_ids))
        return out

    @staticmethod
    def _record(row) -> FileRecord:
        return FileRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[5] or "[]"), row[6])

    # ---- writes (each call is one transaction) ----------------------------------------------
    def mark_pending(self, entries: Iterable[tuple]) -> None:
        """entries: (source, asset_id, size, mtime, node_ids)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, 'pending', ?, NULL, ?)",
                    [(s, a, sz, mt, json.dumps(ids), now) for s, a, sz, mt, ids in entries])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def mark_done(self, sources: Iterable[str]) -> None:
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("UPDATE files SET status='done', updated_at=? WHERE source=?",
                                     [(now, s) for s in sources])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def mark_failed(self, source: str, reason: str, asset_id: Optional[str] = None, size: int = 0,
                    mtime: float = 0.0) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, 'failed', '[]', ?, ?)",
                             (source, asset_id, size, mtime, reason, time.time()))

    def remove(self, source: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM files WHERE source=?", (source,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
