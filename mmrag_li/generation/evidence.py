"""Retrieved nodes -> numbered evidence items the LLM can see and cite.

The retriever returns the evidence nodes of the top-k assets, several nodes per asset (image,
caption, OCR, text chunks), ordered by asset rank. Here they are grouped by ``(asset_id, page)``
in that order and numbered ``E1..Ek`` (stable within one response). Each item carries:

* a thumbnail of its image (downscaled JPEG, ``LLMConfig.thumbnail_px``) as an ``ImageBlock``,
* the caption, an OCR snippet compressed to the lines most related to the question (order kept,
  length capped), the text chunks (compressed the same way), and
* source file name and page, for the citation, and
* ``snippet`` / ``regions``: the lines that match the question, as in search results
  (`mmrag_li.retrieval.regions`); `citation_records` narrows them to the lines the answer relied on.

Evidence text is DATA. `render_open`/`render_body` wrap each item in
``<evidence id="E1" source="..." page="..."> ... </evidence>`` and `neutralize` rewrites anything
inside the evidence that looks like a delimiter or a chat-role tag, so a document cannot close its
own block or open a fake system turn. (``ImageNode.get_content_blocks`` is not used: it would send
the image without its OCR/caption text.)
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from llama_index.core.base.llms.types import ImageBlock
from llama_index.core.schema import ImageNode, NodeWithScore

from mmrag_li.generation._text import lexical_scores, split_sentences
from mmrag_li.generation.cited_lines import citation_regions, citation_snippet, relied_lines
from mmrag_li.generation.lookalikes import sub_folded
from mmrag_li.retrieval.regions import regions_for_nodes
from mmrag_li.retrieval.regions import snippet_for_nodes
from mmrag_li.schema import CAPTION, CROP, IMAGE, OCR, PAGE, TEXT

logger = logging.getLogger(__name__)

IMAGE_MODALITIES = (IMAGE, PAGE, CROP)

# ---------------------------------------------------------------------------------------------
# Neutralising delimiter-looking text inside evidence.

_TAG_WORDS = r"(?:evidence|system|assistant|user|developer|instructions?|question|answer|query|partial_answer|tool)"
_TAG_RE = re.compile(r"<\s*/?\s*" + _TAG_WORDS + r"\b[^<>]{0,200}>?", re.IGNORECASE)
_ENTITY_TAG_RE = re.compile(r"&(?:lt|#0*60|#x0*3c);\s*/?\s*" + _TAG_WORDS + r"\b", re.IGNORECASE)
_SPECIAL_TOKEN_RE = re.compile(r"<\|([^<>|]{0,40})\|>")
_CITE_LIKE_RE = re.compile(r"\[(\s*E\d+(?:\s*[,;]\s*E\d+)*\s*)\]", re.IGNORECASE)


def neutralize(text: str) -> str:
    """Make evidence text unable to look like our delimiters, chat-role tags or citations.

    ``</evidence>`` becomes ``‹/evidence›``, ``<|im_start|>`` becomes ``‹|im_start|›`` and a
    citation-looking ``[E3]`` inside a document becomes ``⟦E3⟧``. Ordinary text is untouched.

    Look-alikes are caught too: matching runs on the `lookalikes.fold` skeleton (NFKD, format
    characters such as zero-width spaces and soft hyphens removed, Cyrillic/Greek letters and
    full-width or angle brackets mapped to ASCII), and a match's whole original span is replaced
    by its neutral ASCII form, so ``＜/еvi\u200bdence＞`` becomes ``‹/evidence›``.

    Args:
        text: evidence text (document text, OCR, caption).
    """
    if not text:
        return ""
    text = sub_folded(_TAG_RE, lambda m: m.group(0).replace("<", "‹").replace(">", "›"), text)
    text = sub_folded(_ENTITY_TAG_RE, lambda m: "‹" + m.group(0)[m.group(0).index(";") + 1:], text)
    text = sub_folded(_SPECIAL_TOKEN_RE, lambda m: "‹|" + m.group(1) + "|›", text)
    text = sub_folded(_CITE_LIKE_RE, lambda m: "⟦" + m.group(1) + "⟧", text)
    return text


def _attr(value: Any) -> str:
    """A value safe to put inside a double-quoted delimiter attribute."""
    s = "" if value is None else str(value)
    s = s.replace("\n", " ").replace("\r", " ")
    return s.replace('"', "'").replace("<", "‹").replace(">", "›")[:200]


# ---------------------------------------------------------------------------------------------
# Thumbnails.


def make_thumbnail(source: str | bytes, max_px: int = 512, quality: int = 85) -> Optional[ImageBlock]:
    """Downscale an image file (or raw bytes) to fit ``max_px`` and return it as a JPEG ImageBlock.

    Returns None (and logs) when the image cannot be read, so one missing file never fails a query.
    """
    from PIL import Image, ImageOps

    try:
        if isinstance(source, (bytes, bytearray)):
            img = Image.open(io.BytesIO(source))
        else:
            img = Image.open(source)
        with img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA", "P"):
                img = img.convert("RGBA")
                bg = Image.new("RGB", img.size, (255, 255, 255))
                bg.paste(img, mask=img.split()[-1])
                img = bg
            elif img.mode != "RGB":
                img = img.convert("RGB")
            if max_px and max(img.size) > max_px:
                img.thumbnail((max_px, max_px), Image.LANCZOS)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=quality, optimize=True)
        return ImageBlock(image=buf.getvalue(), image_mimetype="image/jpeg")
    except Exception as exc:
        logger.warning("thumbnail failed for %s: %s", source if isinstance(source, str) else "<bytes>", exc)
        return None


# ---------------------------------------------------------------------------------------------
# Compression of long OCR / text to the parts related to the question.

_QUANTITY_Q = re.compile(r"\b(how much|how many|total|amount|price|cost|sum|pay|paid|due|balance|fee|charge|"
                         r"number|value|vat|tax|net|gross|quantity|qty)\b", re.IGNORECASE)
_HAS_NUMBER = re.compile(r"\d")


def compress_text(text: str, question: str, max_chars: int, *, by: str = "line") -> str:
    """Keep the lines (or sentences) most related to the question, in document order, within
    ``max_chars``. Short text is returned whole; gaps are marked with ``…``."""
    text = (text or "").strip()
    if not text or len(text) <= max_chars:
        return text
    if by == "line":
        units = [ln.strip() for ln in text.splitlines() if ln.strip()]
    else:
        units = split_sentences(text)
    if not units:
        return text[:max_chars]
    scores = lexical_scores(question, units) if question else [0.0] * len(units)
    if question and _QUANTITY_Q.search(question):
        scores = [s + (0.15 if s > 0 and _HAS_NUMBER.search(u) else 0.0) for s, u in zip(scores, units)]
    order = sorted(range(len(units)), key=lambda i: (-scores[i], i))
    chosen: List[int] = []
    used = 0
    for i in order:
        cost = len(units[i]) + 1
        if used + cost > max_chars:
            if not chosen:  # one over-long unit: cut it
                chosen.append(i)
                break
            continue
        chosen.append(i)
        used += cost
    chosen.sort()
    sep = "\n" if by == "line" else " "
    parts: List[str] = []
    prev = -1
    for i in chosen:
        if prev >= 0 and i != prev + 1:
            parts.append("…")
        elif prev < 0 and i > 0:
            parts.append("…")
        parts.append(units[i][:max_chars])
        prev = i
    if prev < len(units) - 1:
        parts.append("…")
    return sep.join(parts)


# ---------------------------------------------------------------------------------------------
# Evidence items.


@dataclass
class EvidenceItem:
    """One citable unit: the evidence of one asset (and page) under an id like ``E1``."""

    id: str
    asset_id: str
    source: str = ""
    page: Optional[int] = None
    score: Optional[float] = None
    modality: str = TEXT
    image_path: Optional[str] = None
    thumbnail: Optional[ImageBlock] = None
    caption: str = ""
    ocr_text: str = ""
    ocr_snippet: str = ""
    ocr_conf: Optional[float] = None
    texts: List[str] = field(default_factory=list)
    text_snippets: List[str] = field(default_factory=list)
    nodes: List[NodeWithScore] = field(default_factory=list)
    snippet: str = ""
    regions: List[Dict[str, Any]] = field(default_factory=list)
    question: str = ""  # what the item was gathered for (citations rank the answer's own numbers first)

    @property
    def node_ids(self) -> List[str]:
        return [n.node.node_id for n in self.nodes]

    @property
    def source_name(self) -> str:
        return os.path.basename(self.source) if self.source else ""

    @property
    def has_image(self) -> bool:
        return self.thumbnail is not None

    def section_of(self, text: str) -> str:
        """The section heading (node metadata ``section``: a PDF heading, a Markdown header path) of
        the item's node whose text is ``text``; "" when that node has none.

        Args:
            text: one of the item's texts (``texts``, ``ocr_text``).
        """
        want = _flat(text)
        for nws in self.nodes:
            node = nws.node
            if _flat(getattr(node, "text", "") or "") == want:
                return str((node.metadata or {}).get("section") or "")
        return ""

    def full_text(self) -> str:
        """Everything this item says in words (caption + full OCR + full text + where it is from).

        Verification checks claims against this, so a number the LLM read from the image is
        accepted when OCR found it anywhere on the asset, not only in the compressed snippet.
        """
        parts = [f"source {self.source_name}", f"page {self.page}" if self.page is not None else ""]
        parts += [self.caption, self.ocr_text, *self.texts]
        return "\n".join(p for p in parts if p)

    def open_tag(self) -> str:
        attrs = [f'id="{self.id}"', f'source="{_attr(self.source_name)}"']
        if self.page is not None:
            attrs.append(f'page="{_attr(self.page)}"')
        attrs.append(f'type="{_attr(self.modality)}"')
        return "<evidence " + " ".join(attrs) + ">"

    def body(self) -> str:
        """The item's text as shown to the LLM, neutralised, without the delimiters."""
        lines: List[str] = []
        if self.thumbnail is not None:
            lines.append(f"(The image attached just above is evidence {self.id}.)")
        if self.caption:
            lines.append("Caption: " + neutralize(self.caption))
        if self.ocr_snippet:
            conf = f", mean OCR confidence {self.ocr_conf:.0f}" if isinstance(self.ocr_conf, (int, float)) else ""
            lines.append(f"Text read from the image (OCR{conf}):\n" + neutralize(self.ocr_snippet))
        for t in self.text_snippets:
            lines.append("Text:\n" + neutralize(t))
        if not lines:
            lines.append("(no text)")
        return "\n".join(lines)

    def render_text(self) -> str:
        """The whole delimited block as text (for text-only calls)."""
        body = self.body().replace(f"(The image attached just above is evidence {self.id}.)\n", "")
        return f"{self.open_tag()}\n{body}\n</evidence>"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "asset_id": self.asset_id,
            "source": self.source,
            "page": self.page,
            "modality": self.modality,
            "node_ids": self.node_ids,
            "score": self.score,
            "has_image": self.has_image,
            "snippet": self.snippet,
            "regions": list(self.regions),
        }


def _modality(node: Any) -> str:
    mod = (node.metadata or {}).get("modality")
    if mod:
        return str(mod)
    return IMAGE if isinstance(node, ImageNode) else TEXT


def _group_key(nws: NodeWithScore) -> Tuple[str, Any]:
    node = nws.node
    meta = node.metadata or {}
    asset = meta.get("asset_id") or node.ref_doc_id or node.node_id
    return str(asset), meta.get("page")


def _image_source(node: Any) -> Optional[str | bytes]:
    path = getattr(node, "image_path", None) or (node.metadata or {}).get("image_path")
    if path and os.path.exists(str(path)):
        return str(path)
    b64 = getattr(node, "image", None)
    if b64:
        try:
            return base64.b64decode(b64)
        except Exception:
            return None
    return str(path) if path else None


def group_nodes(nodes: Sequence[NodeWithScore]) -> List[Tuple[Tuple[str, Any], List[NodeWithScore]]]:
    """Group by (asset_id, page), keeping first-seen order (the retriever's asset rank)."""
    groups: Dict[Tuple[str, Any], List[NodeWithScore]] = {}
    for nws in nodes:
        groups.setdefault(_group_key(nws), []).append(nws)
    return list(groups.items())


def build_evidence(
    nodes: Sequence[NodeWithScore],
    question: str = "",
    *,
    k: Optional[int] = 5,
    thumbnail_px: int = 512,
    thumbnails: bool = True,
    ocr_chars: int = 700,
    text_chars: int = 1200,
) -> List[EvidenceItem]:
    """Turn retrieved nodes into evidence items ``E1..Ek`` (see module docstring)."""
    items: List[EvidenceItem] = []
    for (asset_id, page), group in group_nodes(nodes):
        if k is not None and len(items) >= k:
            break
        item = EvidenceItem(id=f"E{len(items) + 1}", asset_id=asset_id, page=page, nodes=list(group),
                            question=question or "")
        scores = [n.score for n in group if n.score is not None]
        item.score = max(scores) if scores else None
        captions: List[str] = []
        ocrs: List[str] = []
        texts: List[str] = []
        pictures: List[str] = []  # text a page/image node carries (its text layer or OCR)
        for nws in group:
            node = nws.node
            meta = node.metadata or {}
            if not item.source and meta.get("source"):
                item.source = str(meta.get("source"))
            mod = _modality(node)
            content = (node.get_content() or "").strip() if hasattr(node, "get_content") else ""
            if mod in IMAGE_MODALITIES or isinstance(node, ImageNode):
                if item.image_path is None and item.thumbnail is None:
                    src = _image_source(node)
                    item.modality = mod if mod in IMAGE_MODALITIES else IMAGE
                    if isinstance(src, str):
                        item.image_path = src
                    if thumbnails and src is not None:
                        item.thumbnail = make_thumbnail(src, thumbnail_px)
                if content:
                    pictures.append(content)
            elif mod == CAPTION:
                captions.append(content)
            elif mod == OCR:
                ocrs.append(content)
                if item.ocr_conf is None and isinstance(meta.get("ocr_conf"), (int, float)):
                    item.ocr_conf = float(meta["ocr_conf"])
            else:
                texts.append(content)
        if item.modality == TEXT and not item.image_path and group:
            item.modality = _modality(group[0].node)
        item.caption = " ".join(dict.fromkeys(c for c in captions if c))
        item.ocr_text = "\n".join(dict.fromkeys(o for o in ocrs if o))
        covered = [_flat(t) for t in ocrs + texts if t]
        # a picture's text is used only when no OCR/text node of the item already says it
        texts += [p for p in pictures if not any(c and c in _flat(p) for c in covered)]
        item.texts = list(dict.fromkeys(t for t in texts if t and t not in ocrs and t not in captions))
        item.snippet = snippet_for_nodes(group, question, page) if question else ""
        item.regions = regions_for_nodes(group, question, page, image_match=False) if question else []
        item.ocr_snippet = compress_text(item.ocr_text, question, ocr_chars, by="line")
        per_text = max(200, text_chars // max(1, len(item.texts))) if item.texts else text_chars
        item.text_snippets = [compress_text(t, question, per_text, by="sentence") for t in item.texts]
        items.append(item)
    return items


def _flat(text: str) -> str:
    return " ".join((text or "").split())


# ---------------------------------------------------------------------------------------------
# Citations that resolve.

_CITATION = re.compile(r"\[([^\[\]]*?\bE\d+\b[^\[\]]*?)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def claims_citing(answer: str, evidence_id: str) -> str:
    """The sentences of ``answer`` that cite ``evidence_id`` (citations removed), "" when none does.

    Args:
        answer: the answer text with ``[E#]`` citations.
        evidence_id: e.g. "E2".
    """
    want = re.compile(r"\b" + re.escape(evidence_id) + r"\b")
    out = []
    for sent in _SENTENCE_END.split(answer or ""):
        if any(want.search(m.group(1)) for m in _CITATION.finditer(sent)):
            out.append(_CITATION.sub(" ", sent).strip())
    return " ".join(s for s in out if s)


def citation_records(evidence: Sequence[EvidenceItem], answer: str, citation_ids: Sequence[str],
                     question: str = "") -> List[Dict[str, Any]]:
    """``Response.metadata["citations"]``: one object per cited evidence id, in citation order:
    ``{"id", "asset_id", "source", "page", "snippet", "regions"}``. ``regions`` are first the lines
    the answer's sentences citing that id quote or rely on (their quoted text, then their numbers,
    then their words: `mmrag_li.generation.cited_lines`), found in the item's OCR / text layer, then
    the item's own lines matching the question; ``snippet`` shows the relied lines with the claim's
    terms marked «…». Without a relied line: the item's own regions and snippet. Unknown ids are
    skipped.

    Args:
        evidence: the evidence items the answer was written from.
        answer: the answer text with ``[E#]`` citations.
        citation_ids: the cited ids (e.g. ``Verification.citations``).
        question: the question (default: the one each item was gathered for); its numbers rank
            after the answer's own.
    """
    by_id = {e.id: e for e in evidence}
    out: List[Dict[str, Any]] = []
    for cid in dict.fromkeys(citation_ids):
        item = by_id.get(cid)
        if item is None:
            continue
        claim = claims_citing(answer, cid)
        relied = relied_lines(item, claim, question or item.question) if claim else []
        out.append({"id": cid, "asset_id": item.asset_id, "source": item.source, "page": item.page,
                    "snippet": citation_snippet(relied, claim, item.snippet),
                    "regions": citation_regions(relied, item.regions)})
    return out
