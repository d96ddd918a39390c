"""Walk folders / path lists, sniff each file's real type and dispatch to the right reader.

Use from a pipeline::

    reader = DirectoryReader.from_defaults(settings, blob_store=..., ocr=..., captioner=...)
    for path in reader.iter_files(paths):          # or input_paths given to from_defaults
        try:
            nodes = reader.read_file(path)
        except IngestError as err:                 # err.path, err.reason
            ...

or ``reader.load_data(paths)`` / ``lazy_load_data(paths)``, which never raise for a bad file and
record it in ``reader.failures`` instead.

Symbolic links (``ingest.follow_symlinks: false``, the default): the walk starts from the real
location of each path given (the caller named it), descends no linked folder and reports every link it meets in
``failures`` ("symbolic link: not followed ..."), so the paths it yields contain no link.
`read_file` opens the file without following links and checks that the open descriptor is that
very path (`fileio.open_source`), so a link swapped in after the walk, for the file or any
folder above it, is refused, not read, and nothing of its target is stored.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Union

from llama_index.core.schema import BaseNode
from pydantic import Field, PrivateAttr
from wcmatch import glob as wcglob

from ..errors import IngestError
from ._common import MMReader
from .fileio import SYMLINK_REASON, open_source
from .image import ImageReader
from .pdf import PDFReader
from .sniff import EXT_NAMES, HEAD_BYTES, expected_kind, sniff_bytes
from .text import TextReader

log = logging.getLogger("mmrag_li.readers")

PathLike = Union[str, Path]


_GLOB_FLAGS = wcglob.GLOBSTAR | wcglob.DOTGLOB | wcglob.MATCHBASE


def glob_match(rel_posix: str, pattern: str) -> bool:
    """Match a relative POSIX path (``**`` spans directories); a pattern without '/' also matches
    the bare file name at any depth. wcmatch does the matching: no hand-written glob engine."""
    return wcglob.globmatch(rel_posix, pattern, flags=_GLOB_FLAGS)


class DirectoryReader(MMReader):
    """Folders and files in, nodes out; bad files become :class:`IngestError` entries, not crashes."""

    input_paths: List[str] = Field(default_factory=list, description="Files and/or folders to read.")

    _failures: List[IngestError] = PrivateAttr(default_factory=list)
    _readers: Dict[str, MMReader] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_defaults(cls, settings=None, blob_store=None, ocr=None, captioner=None,  # type: ignore[override]
                      input_paths: Optional[Union[PathLike, Sequence[PathLike]]] = None, **kwargs: Any):
        if input_paths is not None:
            kwargs["input_paths"] = _as_list(input_paths)
        return super().from_defaults(settings=settings, blob_store=blob_store, ocr=ocr, captioner=captioner,
                                     **kwargs)

    @property
    def failures(self) -> List[IngestError]:
        return self._failures

    # -- the file walk ---------------------------------------------------------------------
    def iter_files(self, paths: Optional[Union[PathLike, Sequence[PathLike]]] = None) -> Iterator[Path]:
        """Files to read, in a stable order. Named files are yielded as given (even if missing,
        so that ``read_file`` reports them); folders are walked with include/exclude globs."""
        seen: set = set()
        follow = self.settings.ingest.follow_symlinks
        for raw in _as_list(paths) if paths is not None else self.input_paths:
            root = Path(os.path.abspath(Path(raw).expanduser()))
            if not follow:  # what the caller named is theirs (resolved); below it no link is followed
                root = Path(os.path.realpath(root))
            if root.is_dir():
                for f in self._walk(root):
                    key = os.path.realpath(f)
                    if key not in seen:
                        seen.add(key)
                        yield f
            else:
                key = os.path.realpath(root)
                if key not in seen:
                    seen.add(key)
                    yield root

    def _walk(self, root: Path) -> Iterator[Path]:
        cfg = self.settings.ingest
        follow = cfg.follow_symlinks
        visited_dirs = {os.path.realpath(root)}

        def onerror(err: OSError) -> None:
            where = getattr(err, "filename", None) or str(root)
            reason = "permission denied" if isinstance(err, PermissionError) else f"cannot list folder: {err.strerror or err}"
            self._failures.append(IngestError(str(where), reason))
            log.warning("%s: %s", where, reason)

        for dirpath, dirnames, filenames in os.walk(root, topdown=True, onerror=onerror, followlinks=follow):
            dpath = Path(dirpath)
            rel_dir = dpath.relative_to(root).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir
            keep = []
            for d in sorted(dirnames):
                full = dpath / d
                rel = f"{rel_dir}/{d}" if rel_dir else d
                if any(glob_match(rel, pat) or glob_match(rel + "/\x00", pat) for pat in cfg.exclude):
                    continue
                if full.is_symlink():
                    if not follow:
                        self._skip_link(full)
                        continue
                    real = os.path.realpath(full)
                    if real in visited_dirs:  # symlink loop or second route into the same folder
                        continue
                    visited_dirs.add(real)
                elif follow:
                    visited_dirs.add(os.path.realpath(full))
                if not cfg.recursive:
                    continue
                keep.append(d)
            dirnames[:] = keep
            for name in sorted(filenames):
                full = dpath / name
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if not any(glob_match(rel, pat) for pat in cfg.include):
                    continue
                if any(glob_match(rel, pat) for pat in cfg.exclude):
                    continue
                if full.is_symlink() and not follow:
                    self._skip_link(full)
                    continue
                yield full

    def _skip_link(self, path: Path) -> None:
        """A symbolic link met by the walk is not followed, and reported, not skipped silently."""
        self._failures.append(IngestError(str(path), SYMLINK_REASON))
        log.info("%s: %s", path, SYMLINK_REASON)

    # -- one file --------------------------------------------------------------------------
    def _reader(self, kind: str) -> MMReader:
        if kind not in self._readers:
            cls = {"image": ImageReader, "pdf": PDFReader, "text": TextReader}[kind]
            reader = cls(settings=self.settings, blob_store=self.blobs, ocr=self.ocr, captioner=self.captioner)
            reader._warnings = self._warnings  # one shared list of non-fatal problems
            self._readers[kind] = reader
        return self._readers[kind]

    def read_file(self, path: PathLike, extra_info: Optional[Dict[str, Any]] = None) -> List[BaseNode]:
        """All nodes of one file; raises :class:`IngestError` (path + reason) for a bad file.

        The file is read once through a descriptor opened without following symbolic links (with
        ``ingest.follow_symlinks`` false), and only those bytes are used: see the module docstring.

        Args:
            path: a file, normally one `iter_files` yielded.
            extra_info: metadata added to every node.
        """
        cfg = self.settings.ingest
        src = open_source(path, follow_symlinks=cfg.follow_symlinks, max_mb=cfg.max_file_mb, strict=True)
        p = src.path
        ft = sniff_bytes(src.data[:HEAD_BYTES], p.suffix)
        expected = expected_kind(p)
        suffix = p.suffix.lower()
        if expected in ("image", "pdf") and ft.kind not in ("image", "pdf"):
            detail = ft.mime + ("" if ft.kind != "unknown" or ft.mime != "application/octet-stream" else " (unrecognised binary)")
            raise IngestError(str(p), f"not a {EXT_NAMES.get(suffix, suffix.lstrip('.').upper())}: content is {detail}")
        if ft.kind == "unknown":
            raise IngestError(str(p), f"unsupported file type: {ft.mime}")
        info: Dict[str, Any] = dict(extra_info or {})
        info["mime_type"] = ft.mime
        if expected is not None and expected != ft.kind:
            info["extension_mismatch"] = f"{suffix} file contains {ft.mime}"
            log.info("%s: extension says %s but content is %s; reading as %s", p, expected, ft.mime, ft.kind)
        before = len(self._warnings)
        try:
            nodes = list(self._reader(ft.kind).lazy_load_data(src, extra_info=info))
            # Non-fatal problems of this file (a broken PDF page, an OCR timeout) travel with its nodes.
            prefix = f"{p}: "
            mine = [w[len(prefix):] for w in self._warnings[before:] if w.startswith(prefix)]
            if mine:
                for n in nodes:
                    n.metadata["ingest_warnings"] = list(mine)
                    for keys in (n.excluded_embed_metadata_keys, n.excluded_llm_metadata_keys):
                        if "ingest_warnings" not in keys:
                            keys.append("ingest_warnings")
            return nodes
        except IngestError:
            raise
        except MemoryError:
            raise IngestError(str(p), "out of memory while reading") from None
        except Exception as exc:  # any other reader crash is still one bad file, not a dead run
            log.debug("reader crash on %s", p, exc_info=True)
            raise IngestError(str(p), f"{type(exc).__name__}: {exc}") from exc

    # -- LlamaIndex reader API -------------------------------------------------------------
    def lazy_load_data(self, paths: Optional[Union[PathLike, Sequence[PathLike]]] = None,  # type: ignore[override]
                       extra_info: Optional[Dict[str, Any]] = None) -> Iterator[BaseNode]:
        """Nodes of every readable file; bad files go to ``self.failures`` (reset per call)."""
        self._failures.clear()
        for f in self.iter_files(paths):
            try:
                nodes = self.read_file(f, extra_info)
            except IngestError as err:
                self._failures.append(err)
                log.warning("skipped %s", err)
                continue
            yield from nodes

    def load_data(self, paths: Optional[Union[PathLike, Sequence[PathLike]]] = None,  # type: ignore[override]
                  extra_info: Optional[Dict[str, Any]] = None) -> List[BaseNode]:
        return list(self.lazy_load_data(paths, extra_info))


def _as_list(paths: Union[PathLike, Iterable[PathLike]]) -> List[str]:
    if isinstance(paths, (str, Path)):
        return [str(paths)]
    return [str(p) for p in paths]


__all__ = ["DirectoryReader", "glob_match"]
