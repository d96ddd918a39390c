"""Plain text and Markdown -> chunked TextNodes (modality ``text``).

Decoding: UTF-8 (a BOM is dropped); otherwise the encoding charset-normalizer detects, else
latin-1. Non-UTF-8 files are reported in metadata ``encoding`` and a reader warning.

Markdown is split by headers (LlamaIndex ``MarkdownNodeParser``), then each section with
``SentenceSplitter``. Every chunk's metadata ``section`` is the header path ("Guide > Setup") and
that path is prepended to the chunk text so a search for the section title finds it.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterator, List, Optional, Tuple

from llama_index.core import Document
from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter
from llama_index.core.schema import BaseNode

from ..errors import IngestError
from ..schema import TEXT, make_text_node
from ._common import MMReader, mark_redacted

MARKDOWN_EXTS = {".md", ".markdown", ".mdown", ".mkd"}
_HEADER = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def decode_text(data: bytes, path: str = "") -> Tuple[str, str]:
    """(text, encoding). Raises IngestError for content that is not text."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace"), "utf-16"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    if b"\x00" in data[:8192]:
        raise IngestError(path, "binary content (NUL bytes), not text")
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data).best()
        if best is not None and best.encoding:
            return str(best), best.encoding
    except ImportError:  # pragma: no cover - charset-normalizer comes with requests
        pass
    return data.decode("latin-1"), "latin-1"


class TextReader(MMReader):
    """A .txt / .md (or any text/*) file -> ``text`` TextNodes."""

    def lazy_load_data(self, file: Any, extra_info: Optional[Dict[str, Any]] = None) -> Iterator[BaseNode]:  # type: ignore[override]
        src = self.source_file(file)  # bytes read through one descriptor; no symlink followed
        path = src.path
        cfg = self.settings.ingest
        text, encoding = decode_text(src.data, str(path))
        if encoding not in ("utf-8", "utf-8-sig", "ascii"):
            self._warn(path, f"not UTF-8: decoded as {encoding}")
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
        if not text.strip():
            raise IngestError(str(path), "no text content (only whitespace)")
        asset_id = src.content_hash
        # PII goes before chunking: an IBAN or address cut by a chunk boundary would escape.
        text, redacted = self.redact(text)
        is_md = path.suffix.lower() in MARKDOWN_EXTS or (extra_info or {}).get("mime_type") == "text/markdown"
        mime = "text/markdown" if is_md else "text/plain"
        common = self.common_meta(src, asset_id, mime, extra_info)
        common.update(encoding=encoding, producer="mmrag_li.TextReader", producer_version=_version())
        keep = self.keep_originals  # a verbatim copy of a file that held PII is kept only with "always"
        if keep == "always" or (keep == "redacted" and not redacted):
            common["blob_path"] = self.blobs.put_bytes(src.data, asset_id, src.suffix, kind="originals")
        elif keep == "redacted":
            common["blob_path"] = self.blobs.put_bytes(text.encode("utf-8"), f"{asset_id}-redacted", src.suffix,
                                                       kind="originals")
        source = self.source_name(path)
        splitter = SentenceSplitter(chunk_size=cfg.chunk_size, chunk_overlap=cfg.chunk_overlap)

        sections = self._md_sections(text) if is_md else [(None, text)]
        title = next((s.split(" > ")[0] for s, _ in sections if s), None)
        if title:
            common["title"] = title
        index = 0
        for section, body in sections:
            body = body.strip()
            if not body:
                continue
            for chunk in splitter.split_text(body):
                if not chunk.strip():
                    continue
                chunk_text = f"{section}\n\n{chunk}" if section else chunk
                meta = dict(common)
                meta.update(section=section, chunk_index=index)
                node = make_text_node(chunk_text, asset_id=asset_id, source=source, modality=TEXT,
                                      id_parts=(index,), **meta)
                if redacted:
                    mark_redacted(node)
                yield node
                index += 1

    @staticmethod
    def _md_sections(text: str) -> List[Tuple[Optional[str], str]]:
        """[(header path or None, section body without its header line)] in document order."""
        out: List[Tuple[Optional[str], str]] = []
        parser = MarkdownNodeParser(include_prev_next_rel=False)
        for node in parser.get_nodes_from_documents([Document(text=text)]):
            body = node.get_content()
            parents = [p for p in str(node.metadata.get("header_path", "/")).split("/") if p]
            first, _, rest = body.partition("\n")
            m = _HEADER.match(first)
            if m:
                parents.append(m.group(2).strip())
                body = rest
            out.append((" > ".join(parents) or None, body))
        return out


def _version() -> str:
    from .. import __version__

    return __version__


__all__ = ["TextReader", "decode_text"]
