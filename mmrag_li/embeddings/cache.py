"""Embedding cache keyed by (content hash, model id, model version).

Re-ingesting a folder, or the same image under another name, must never re-encode: vectors
are looked up by what was encoded and by which model, not by file path.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np


def cache_key(model_id: str, model_version: str, kind: str, content: str | bytes) -> str:
    data = content.encode("utf-8") if isinstance(content, str) else content
    h = hashlib.sha256()
    for part in (model_id.encode(), b"\0", model_version.encode(), b"\0", kind.encode(), b"\0", data):
        h.update(part)
    return h.hexdigest()


class EmbeddingCache:
    """A small SQLite key-value store of float32 vectors; safe to share between threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, dim INTEGER, vec BLOB)")
        self._db.commit()
        self.hits = 0
        self.misses = 0

    def get_many(self, keys: Sequence[str]) -> Dict[str, List[float]]:
        found: Dict[str, List[float]] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start:start + 500])
                marks = ",".join("?" * len(chunk))
                for key, _dim, blob in self._db.execute(
                        f"SELECT key, dim, vec FROM vectors WHERE key IN ({marks})", chunk):
                    found[key] = np.frombuffer(blob, dtype=np.float32).tolist()
        self.hits += len(found)
        self.misses += len(set(keys)) - len(found)
        return found

    def put_many(self, items: Dict[str, Sequence[float]]) -> None:
        rows = [(k, len(v), np.asarray(v, dtype=np.float32).tobytes()) for k, v in items.items()]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)", rows)
            self._db.commit()

    def get_or_compute(self, keys: Sequence[str], compute: Callable[[List[int]], List[List[float]]]
                       ) -> List[List[float]]:
        """Return one vector per key; ``compute(indices)`` is called once for the missing ones."""
        found = self.get_many(keys)
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            vectors = compute(missing)
            new = {keys[i]: v for i, v in zip(missing, vectors)}
            self.put_many(new)
            found.update(new)
        return [found[k] for k in keys]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class NullCache:
    """Drop-in when caching is off."""

    hits = misses = 0

    def get_or_compute(self, keys: Sequence[str], compute: Callable[[List[int]], List[List[float]]]
                       ) -> List[List[float]]:
        return compute(list(range(len(keys))))

    def close(self) -> None:  # pragma: no cover - nothing to close
        pass


def open_cache(path: Optional[str | Path]) -> "EmbeddingCache | NullCache":
    return EmbeddingCache(path) if path else NullCache()
