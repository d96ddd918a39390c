"""Shared plumbing for the readers: base class, file checks, metadata, OCR node building."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from llama_index.core.readers.base import BasePydanticReader
from llama_index.core.schema import BaseNode, TextNode
from pydantic import ConfigDict, Field, PrivateAttr

from ..blobs import BlobStore
from ..config import Settings
from ..enrich.types import OCRResult, OCRWord
from ..schema import OCR, make_text_node
from .fileio import SourceFile, open_source

log = logging.getLogger("mmrag_li.readers")

FORMAT_MIME = {
    "PNG": "image/png", "JPEG": "image/jpeg", "MPO": "image/jpeg", "WEBP": "image/webp",
    "TIFF": "image/tiff", "BMP": "image/bmp", "GIF": "image/gif",
}


class MMReader(BasePydanticReader):
    """Base of every mmrag reader: settings + blob store + optional OCR engine and captioner."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    settings: Settings = Field(default_factory=Settings, description="Ingest/OCR/tiling settings.")
    blob_store: Optional[BlobStore] = Field(default=None, description="Where copies/renders go; None = temp dir.")
    ocr: Optional[Any] = Field(default=None, description="An OCREngine, or None for no OCR.")
    captioner: Optional[Any] = Field(default=None, description="A Captioner, or None for no captions.")

    _warnings: List[str] = PrivateAttr(default_factory=list)

    @classmethod
    def from_defaults(cls, settings: Optional[Settings] = None, blob_store: Optional[BlobStore] = None,
                      ocr: Any = None, captioner: Any = None, **kwargs: Any):
        """``ocr="auto"`` builds the engine named in ``settings.ocr``; ``None`` means no OCR."""
        settings = settings or Settings()
        if isinstance(ocr, str) and ocr == "auto":
            from ..enrich.ocr import get_ocr_engine

            ocr = get_ocr_engine(settings.ocr)
        return cls(settings=settings, blob_store=blob_store, ocr=ocr, captioner=captioner, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return cls.__name__

    # -- helpers ---------------------------------------------------------------------------
    @property
    def blobs(self) -> BlobStore:
        if self.blob_store is None:
            self.blob_store = BlobStore.temporary()
        return self.blob_store

    @property
    def warnings(self) -> List[str]:
        """Non-fatal problems (a broken PDF page, an OCR timeout) seen by this reader."""
        return self._warnings

    def _warn(self, path: Path, message: str) -> None:
        msg = f"{path}: {message}"
        self._warnings.append(msg)
        log.warning(msg)

    def load_data(self, file: Any, extra_info: Optional[Dict[str, Any]] = None) -> List[BaseNode]:  # type: ignore[override]
        return list(self.lazy_load_data(file, extra_info))

    def lazy_load_data(self, file: Any, extra_info: Optional[Dict[str, Any]] = None):  # type: ignore[override]
        raise NotImplementedError

    def source_file(self, file: Any) -> SourceFile:
        """``file`` (a path, or a `SourceFile` already read by `DirectoryReader`) as bytes read
        through one descriptor, without following a symbolic link to the file itself."""
        if isinstance(file, SourceFile):
            return file
        cfg = self.settings.ingest
        return open_source(file, follow_symlinks=cfg.follow_symlinks, max_mb=cfg.max_file_mb, strict=False)

    def source_name(self, path: Any) -> str:
        """What nodes show as ``source``: the path, with PII in it redacted when ``ingest.redact_pii``."""
        name = str(path)
        if self.settings.ingest.redact_pii:
            from ..enrich.pii import redact_source

            name = redact_source(name, phone_regions=self.settings.ingest.pii_phone_regions)
        return name

    @property
    def keep_originals(self) -> str:
        """How originals are copied into the blob store: ``always`` (verbatim), ``redacted`` (text with
        its PII replaced, a PDF with its text layer redacted and metadata scrubbed, no verbatim image
        file) or ``never``; ``ingest.keep_originals``, whose default (null) is ``always``, or ``never``
        when ``ingest.redact_pii`` is on."""
        cfg = self.settings.ingest
        return cfg.keep_originals or ("never" if cfg.redact_pii else "always")

    def redact(self, text: str) -> Tuple[str, Dict[str, int]]:
        """(text, {kind: count}) with PII replaced when ``ingest.redact_pii`` is on (before chunking,
        so nothing escapes by being cut in two), else the text unchanged."""
        if not self.settings.ingest.redact_pii or not text:
            return text, {}
        from ..enrich.pii import redact_text

        return redact_text(text, phone_regions=self.settings.ingest.pii_phone_regions)

    def redact_ocr(self, result: Any) -> bool:
        """Redact an OCR result's lines/words in place before chunking (``ingest.redact_pii``);
        True when anything was replaced."""
        if not self.settings.ingest.redact_pii:
            return False
        from ..enrich.pii import redact_ocr_result

        return bool(redact_ocr_result(result, phone_regions=self.settings.ingest.pii_phone_regions))

    def common_meta(self, path: Any, asset_id: str, mime: str, extra_info: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        meta: Dict[str, Any] = dict(extra_info or {})
        if isinstance(path, SourceFile):
            mtime: Optional[float] = path.mtime
            path = path.path
        else:
            try:
                mtime = Path(path).stat().st_mtime
            except OSError:
                mtime = None
        meta.update(
            file_name=Path(self.source_name(path)).name,
            mime_type=meta.get("mime_type") or mime,
            content_hash=asset_id,
            collection=self.settings.ingest.collection,
            mtime=mtime,
        )
        return meta


def mark_redacted(node: BaseNode) -> None:
    """Record on ``node`` which PII placeholders its text holds (``pii_redacted``: {kind: count})."""
    from ..enrich.pii import placeholder_counts

    counts = placeholder_counts(getattr(node, "text", "") or "")
    if not counts:
        return
    node.metadata["pii_redacted"] = counts
    for keys in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
        if "pii_redacted" not in keys:
            keys.append("pii_redacted")


def union_box(boxes: Iterable[Sequence[int]]) -> Optional[List[int]]:
    boxes = list(boxes)
    if not boxes:
        return None
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def words_meta(words: Sequence[OCRWord]) -> List[Dict[str, Any]]:
    """OCR words as small dicts for node metadata: text, confidence, pixel box, line index.

    Args:
        words: the OCR words of one node.
    """
    return [{"text": w.text, "conf": round(float(w.conf), 1), "bbox": [int(c) for c in w.bbox], "line": int(w.line)}
            for w in words]


def _approx_tokens(text: str) -> int:
    # Word-piece tokenizers give ~1.3 tokens per English word; cheap and good enough to size chunks.
    return int(len(text.split()) * 1.3) + 1


def ocr_nodes(result: OCRResult, *, asset_id: str, source: str, id_prefix: Sequence[Any], chunk_tokens: int,
              meta: Dict[str, Any]) -> List[TextNode]:
    """OCR text as TextNode(s) of modality 'ocr'. Long pages are split by whole lines into chunks of
    about ``chunk_tokens`` so an embedding model sees all of it; each chunk keeps its own words and
    the bbox around them."""
    if not result.words or not result.text.strip():
        return []
    by_line: Dict[int, List[OCRWord]] = {}
    for w in result.words:
        by_line.setdefault(w.line, []).append(w)
    groups: List[List[int]] = [[]]
    size = 0
    for idx, line in enumerate(result.lines):
        t = _approx_tokens(line)
        if groups[-1] and size + t > chunk_tokens:
            groups.append([])
            size = 0
        groups[-1].append(idx)
        size += t
    nodes: List[TextNode] = []
    many = len(groups) > 1
    for ci, group in enumerate(groups):
        text = "\n".join(result.lines[i] for i in group).strip()
        words = [w for i in group for w in by_line.get(i, [])]
        if not text or not words:
            continue
        conf = round(sum(w.conf for w in words) / len(words), 2)
        m = dict(meta)
        m.update(
            width=result.width or m.get("width"),
            height=result.height or m.get("height"),
            bbox=union_box(w.bbox for w in words),
            ocr_engine=result.engine,
            ocr_lang=result.lang,
            ocr_conf=conf,
            words=words_meta(words),
            n_words=len(words),
            orientation=result.orientation,
            producer=result.engine,
            producer_version=result.engine_version,
        )
        if many:
            m["chunk_index"] = ci
        parts = list(id_prefix) + ([ci] if many else [])
        nodes.append(make_text_node(text, asset_id=asset_id, source=source, modality=OCR, id_parts=parts, **m))
    return nodes
