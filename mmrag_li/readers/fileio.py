"""Read a file the walk found without following a symbolic link swapped in after the walk.

Every reader reads a file's bytes once, through one descriptor opened here, and then works on
those bytes only (sniffing, hashing, decoding, the blob-store copy): a file replaced between the
walk and the read can neither send the reader outside the ingested folder nor make the hash and
the stored copy disagree.

With ``ingest.follow_symlinks: false`` (the default):

* the last path component is opened with ``O_NOFOLLOW``: a symbolic link there fails (ELOOP);
* the real location of the open descriptor (``/proc/self/fd/N`` on Linux, ``F_GETPATH`` on
  macOS) must be the path itself, so a *folder* on the way that was swapped for a link is
  refused as well (``strict=True``, what `DirectoryReader.read_file` uses: the walk yields paths
  without links). A reader given a path directly (``strict=False``) resolves the folders the
  caller named and checks only the file itself.

Both cases raise ``IngestError(path, SYMLINK_REASON ...)``; the file's bytes are never read.
"""

from __future__ import annotations

import errno
import io
import os
import stat as _stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import IngestError
from ..schema import content_hash

SYMLINK_REASON = "symbolic link: not followed (ingest.follow_symlinks is false)"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


@dataclass
class SourceFile:
    """The bytes of one file as read through one descriptor, with where they came from.

    Args:
        path: absolute path the file was opened by (not resolved).
        data: the whole content.
        mtime: modification time of the opened file (``fstat``).
        real_path: where the descriptor really points.
    """

    path: Path
    data: bytes = field(repr=False)
    mtime: float = 0.0
    real_path: str = ""
    _hash: Optional[str] = field(default=None, repr=False)

    @property
    def size(self) -> int:
        """Number of bytes read."""
        return len(self.data)

    @property
    def suffix(self) -> str:
        """Lower-case extension of the path ("" when none)."""
        return self.path.suffix.lower()

    @property
    def name(self) -> str:
        """The file name (last path component)."""
        return self.path.name

    @property
    def content_hash(self) -> str:
        """The asset id of these bytes (`mmrag_li.schema.content_hash`)."""
        if self._hash is None:
            self._hash = content_hash(self.data)
        return self._hash

    def stream(self) -> io.BytesIO:
        """A fresh binary stream over the bytes (for Pillow, etc.)."""
        return io.BytesIO(self.data)

    def __str__(self) -> str:
        return str(self.path)


def _fd_path(fd: int) -> Optional[str]:
    """Where an open descriptor really points, or None when the platform cannot say."""
    proc = f"/proc/self/fd/{fd}"
    try:
        target = os.readlink(proc)
    except OSError:
        target = None
    if target is not None:
        return target[: -len(" (deleted)")] if target.endswith(" (deleted)") else target
    try:
        import fcntl

        getpath = getattr(fcntl, "F_GETPATH", None)
        if getpath is not None:
            raw = fcntl.fcntl(fd, getpath, b"\0" * 1024)
            return os.fsdecode(raw.split(b"\0", 1)[0])
    except OSError:
        pass
    return None


def _open_error(p: Path, exc: OSError, follow: bool) -> IngestError:
    code = exc.errno
    if code == errno.ELOOP or (code in (errno.EMLINK, getattr(errno, "EFTYPE", -1)) and not follow):
        return IngestError(str(p), SYMLINK_REASON if not follow else "symbolic link loop")
    if code == errno.ENOENT:
        return IngestError(str(p), "broken symlink" if os.path.islink(p) else "file not found")
    if code in (errno.EACCES, errno.EPERM):
        return IngestError(str(p), "permission denied")
    if code == errno.EISDIR:
        return IngestError(str(p), "is a directory, not a file")
    if code in (errno.ENXIO, errno.EOPNOTSUPP):
        return IngestError(str(p), "not a regular file")
    if code == errno.ENOTDIR:
        return IngestError(str(p), "file not found (a folder on its path is not a folder)")
    return IngestError(str(p), f"cannot read file: {exc.strerror or exc}")


def open_source(path: Any, *, follow_symlinks: bool = False, max_mb: Optional[float] = None,
                strict: bool = True) -> SourceFile:
    """Open ``path`` safely and read it whole; raise `IngestError` (path + reason) when it cannot be.

    Args:
        path: the file (str or Path); made absolute, not resolved.
        follow_symlinks: ``ingest.follow_symlinks``; when False no symbolic link is followed.
        max_mb: refuse files larger than this many MiB (``ingest.max_file_mb``); None = no limit.
        strict: with ``follow_symlinks`` False, also refuse a path whose *folders* lead through
            a symbolic link (what the walk yields never does); False resolves the folders first.
    """
    p = Path(os.path.abspath(Path(path).expanduser()))
    if not follow_symlinks and not strict:
        p = Path(os.path.realpath(p.parent)) / p.name
    flags = _READ_FLAGS | (0 if follow_symlinks else _NOFOLLOW)
    try:
        fd = os.open(p, flags)
    except OSError as exc:
        raise _open_error(p, exc, follow_symlinks) from None
    try:
        st = os.fstat(fd)
        if _stat.S_ISDIR(st.st_mode):
            raise IngestError(str(p), "is a directory, not a file")
        if not _stat.S_ISREG(st.st_mode):
            raise IngestError(str(p), "not a regular file")
        if not follow_symlinks and _NOFOLLOW == 0 and os.path.islink(p):  # pragma: no cover - no O_NOFOLLOW
            raise IngestError(str(p), SYMLINK_REASON)
        real = _fd_path(fd) or os.path.realpath(p)
        if not follow_symlinks and os.path.normcase(real) != os.path.normcase(str(p)):
            raise IngestError(str(p), f"reached through a {SYMLINK_REASON} (it leads to {real})")
        limit = int(max_mb * 1024 * 1024) if max_mb is not None else None
        if limit is not None and st.st_size > limit:
            raise IngestError(str(p), f"file exceeds max_file_mb ({st.st_size / 1048576:.1f} MB > {max_mb:g} MB)")
        if st.st_size == 0:
            raise IngestError(str(p), "empty file (0 bytes)")
        chunks = []
        total = 0
        while True:
            try:
                block = os.read(fd, 1 << 20)
            except OSError as exc:
                raise _open_error(p, exc, follow_symlinks) from None
            if not block:
                break
            chunks.append(block)
            total += len(block)
            if limit is not None and total > limit:
                raise IngestError(str(p), f"file exceeds max_file_mb (grew past {max_mb:g} MB while being read)")
        data = b"".join(chunks)
        if not data:
            raise IngestError(str(p), "empty file (0 bytes)")
        return SourceFile(path=p, data=data, mtime=st.st_mtime, real_path=real)
    finally:
        os.close(fd)


__all__ = ["SourceFile", "open_source", "SYMLINK_REASON"]
