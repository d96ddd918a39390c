"""PDF -> text-layer chunks, page renders, embedded images, and OCR for pages without text.

Per page (``page`` is 1-based):

* ``text`` TextNodes: the page's text layer chunked with LlamaIndex's ``SentenceSplitter``; each
  carries ``lines`` (the text-layer lines in the chunk with their boxes in PDF points, origin
  top-left, see `text_lines`) and ``page_width_pt``/``page_height_pt``, for highlighting matches,
  and ``section``: the heading it sits under (`mmrag_li.readers.pdf_sections`), when there is one;
* one ``page`` ImageNode: the page rendered at ``pdf_render_dpi`` (``bbox`` = whole render, px);
  its text (content) is the page's text layer, or what OCR read on a scanned page, so a stock
  LlamaIndex engine given the page node sees its words too;
* ``image`` ImageNodes for embedded raster images with both sides >= ``pdf_min_image_side``
  pixels; their ``bbox`` is where they sit on the page, in PDF points (``bbox_units="pt"``,
  origin top-left, 72 pt per inch). Images covering most of a page without a text layer are the
  scan itself and are represented by the ``page`` node instead;
* an ``ocr`` TextNode for pages without a (meaningful) text layer: rendered at ``pdf_ocr_dpi``;
  word boxes are pixels of that render (``bbox_units="px"``, ``dpi`` says which render).

A page that fails is logged (``reader.warnings``) and skipped; the other pages are kept.

Work is bounded: a page without a text layer is first rendered at ``BLANK_CHECK_DPI`` (a few ms);
a page with no ink gets no render, no OCR and no nodes (a document of blank pages keeps only
its first page node, ``blank_pages`` says how many). The whole file stops with an `IngestError`
once ``ingest.max_file_budget_s`` is spent, whatever the page count.

With ``ingest.redact_pii`` each page's text is redacted *before* it is chunked, the matches are
also blacked out of the page before it is rendered (PyMuPDF redactions), OCR lines are redacted
before chunking, the file name in ``source`` is redacted, and the original PDF (text layer,
metadata) is not copied into the blob store (``ingest.keep_originals``: ``redacted`` stores a
copy with the page redactions applied and metadata scrubbed instead, ``always`` the verbatim file).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode
from PIL import Image

from ..enrich.ocr import OCRError
from ..errors import IngestError
from ..schema import IMAGE, PAGE, TEXT, make_image_node, make_text_node
from ._common import MMReader, mark_redacted, ocr_nodes
from .pdf_sections import SectionTracker

# A page whose text layer has fewer characters than this and is mostly covered by images is
# treated as scanned (page numbers or a stamp on a scan must not stop OCR).
MIN_TEXT_CHARS = 50
SCAN_COVERAGE = 0.5
# Blank-page check: a grey render this coarse costs milliseconds; any pixel darker than INK_LEVEL is ink.
BLANK_CHECK_DPI = 24
INK_LEVEL = 250


def _pymupdf():
    import pymupdf

    return pymupdf


def pymupdf_version() -> str:
    pm = _pymupdf()
    return f"{pm.__version__} (mupdf {getattr(pm, 'mupdf_version', '?')})"


def _has_eof_marker(data: bytes, tail: int = 4096) -> bool:
    return b"%%EOF" in data[-tail:]


def page_is_blank(page: Any) -> bool:
    """True when a PyMuPDF page shows no ink at all (checked on a coarse greyscale render)."""
    pm = _pymupdf()
    pix = page.get_pixmap(dpi=BLANK_CHECK_DPI, colorspace=pm.csGRAY, alpha=False)
    return not pix.samples or min(pix.samples) >= INK_LEVEL


def text_lines(page: Any) -> List[Dict[str, Any]]:
    """The text-layer lines of a PyMuPDF page: ``[{"text", "bbox": [x0, y0, x1, y1]}]`` in PDF points
    of the page as shown (rotation applied), origin top-left, rounded to 0.1 pt. Pieces on one
    baseline (table cells) are joined left to right into one row, as ``get_text(sort=True)`` does.
    Lines, not characters, keep node metadata small; `mmrag_li.retrieval.regions` turns them into
    regions.

    Args:
        page: a ``pymupdf.Page``.
    """
    pm = _pymupdf()
    rot = page.rotation_matrix if getattr(page, "rotation", 0) else None
    pieces = []
    for block in page.get_text("dict", sort=True).get("blocks", []):
        for line in block.get("lines", []) if block.get("type", 0) == 0 else []:
            text = " ".join("".join(span.get("text", "") for span in line.get("spans", [])).split())
            if text:
                r = pm.Rect(line["bbox"])
                pieces.append((text, r * rot if rot is not None else r))
    rows: List[List[Any]] = []  # [y0, y1, [(x0, text, rect)]]
    for text, r in sorted(pieces, key=lambda t: ((t[1].y0 + t[1].y1) / 2, t[1].x0)):
        cy = (r.y0 + r.y1) / 2
        if rows and rows[-1][0] <= cy <= rows[-1][1] and r.y0 <= (rows[-1][0] + rows[-1][1]) / 2 <= r.y1:
            rows[-1][2].append((r.x0, text, r))
            rows[-1][0], rows[-1][1] = min(rows[-1][0], r.y0), max(rows[-1][1], r.y1)
        else:
            rows.append([r.y0, r.y1, [(r.x0, text, r)]])
    out: List[Dict[str, Any]] = []
    for _y0, _y1, parts in rows:
        parts.sort(key=lambda t: t[0])
        box = pm.Rect(parts[0][2])
        for _x, _t, r in parts[1:]:
            box |= r
        out.append({"text": " ".join(t for _x, t, _r in parts),
                    "bbox": [round(box.x0, 1), round(box.y0, 1), round(box.x1, 1), round(box.y1, 1)]})
    return out


def lines_in(chunk: str, lines: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The ``lines`` whose text occurs in ``chunk`` (whitespace-insensitive; a joined row also when
    each of its words does).

    Args:
        chunk: a text chunk of the page.
        lines: the page's :func:`text_lines`.
    """
    flat = " ".join(chunk.split())
    return [ln for ln in lines if ln["text"] in flat or all(w in flat for w in ln["text"].split())]


def _redact_page(page: Any, text: str, regions: Any) -> Tuple[str, Dict[str, int]]:
    """PII in a page's text replaced before chunking, and blacked out of the page itself (so the
    render and embedded images do not show it); (text, {kind: count})."""
    from ..enrich.pii import get_redactor, redact_text

    redactor = get_redactor(tuple(regions) if regions else None)
    matches = redactor.find(text)
    if not matches:
        return text, {}
    marked = False
    for m in matches:
        wanted = " ".join(m.text.split())
        rects = page.search_for(wanted) or [r for tok in wanted.split() if len(tok) >= 3
                                            for r in page.search_for(tok)]
        for r in rects:
            page.add_redact_annot(r, fill=(0, 0, 0))
            marked = True
    if marked:
        page.apply_redactions()
    return redact_text(text, redactor=redactor)


def _redacted_copy(doc: Any) -> bytes:
    """The PDF after its pages' PII redactions (``_redact_page``), with metadata, XMP, attached
    files, JavaScript and hidden text scrubbed and unreferenced objects dropped."""
    doc.scrub()
    return doc.tobytes(garbage=4, deflate=True)


def _png_to_pil(data: bytes) -> Image.Image:
    import io

    im = Image.open(io.BytesIO(data))
    im.load()
    return im


class PDFReader(MMReader):
    """A PDF file -> text, page, image and ocr nodes (see module docstring)."""

    def lazy_load_data(self, file: Any, extra_info: Optional[Dict[str, Any]] = None) -> Iterator[BaseNode]:  # type: ignore[override]
        src = self.source_file(file)  # bytes read through one descriptor; no symlink followed
        path = src.path
        pm = _pymupdf()
        cfg = self.settings.ingest
        started = time.monotonic()
        budget = float(cfg.max_file_budget_s or 0)
        has_eof = _has_eof_marker(src.data)
        try:
            doc = pm.open(stream=src.data, filetype="pdf")
        except pm.EmptyFileError:
            raise IngestError(str(path), "empty file (0 bytes)") from None
        except (pm.FileDataError, RuntimeError, ValueError) as exc:
            what = "truncated PDF (no %%EOF trailer)" if not has_eof else "corrupt PDF"
            raise IngestError(str(path), f"{what}: {exc}") from None
        try:
            if doc.is_repaired and not has_eof:
                # MuPDF can rebuild a cut-off file, but whatever followed the cut (pages, images,
                # fonts) is silently gone: report it rather than ingest half a document.
                raise IngestError(str(path), "truncated PDF: file ends without %%EOF trailer (cut short?)")
            if not doc.is_pdf:
                raise IngestError(str(path), "not a PDF document")
            if doc.needs_pass:
                raise IngestError(str(path), "encrypted PDF (password required)")
            n_pages = doc.page_count
            if n_pages == 0:
                raise IngestError(str(path), "PDF has no pages (truncated or corrupt)")
            if n_pages > cfg.max_pdf_pages:
                raise IngestError(str(path), f"PDF has {n_pages} pages, more than max_pdf_pages={cfg.max_pdf_pages}")
            asset_id = src.content_hash
            common = self.common_meta(src, asset_id, "application/pdf", extra_info)
            common.update(n_pages=n_pages)
            keep = self.keep_originals  # the verbatim PDF keeps its text layer and metadata: only with "always"
            if keep == "always":
                common["blob_path"] = self.blobs.put_bytes(src.data, asset_id, ".pdf", kind="originals")
            held: Optional[List[BaseNode]] = [] if keep == "redacted" else None  # blob_path comes at the end
            title = self.redact(((doc.metadata or {}).get("title") or "").strip())[0]
            if title:
                common["title"] = title
            if doc.is_repaired:
                self._warn(path, "PDF was damaged and repaired by MuPDF; some content may be missing")
                common["pdf_repaired"] = True
            splitter = SentenceSplitter(chunk_size=cfg.chunk_size, chunk_overlap=cfg.chunk_overlap)
            version = pymupdf_version()
            failed = blank = first_blank = 0
            sections = SectionTracker()  # each text chunk's section heading (metadata "section")
            first_error = ""
            for index in range(n_pages):
                if budget and time.monotonic() - started > budget:
                    raise IngestError(str(path), f"time budget spent: {budget:g} s (ingest.max_file_budget_s) "
                                                 f"after {index} of {n_pages} pages")
                try:
                    nodes = self._page(doc, index, path, asset_id, common, splitter, version, sections=sections)
                    if nodes is None:
                        first_blank = index if not blank else first_blank
                        blank += 1
                        continue
                except IngestError:
                    raise
                except Exception as exc:  # one broken page must not lose the others
                    failed += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"
                    self._warn(path, f"page {index + 1} failed: {type(exc).__name__}: {exc}")
                    continue
                if held is not None:
                    held.extend(nodes)
                else:
                    yield from nodes
            if failed == n_pages:
                raise IngestError(str(path), f"all {n_pages} pages failed to load (first: {first_error})")
            if blank and blank + failed == n_pages:  # nothing but blank pages: keep one page node
                nodes = self._page(doc, first_blank, path, asset_id, common, splitter, version, keep_blank=True) or []
                for n in nodes:
                    n.metadata["blank_pages"] = blank
                if held is not None:
                    held.extend(nodes)
                else:
                    yield from nodes
            if held is not None:
                blob = self.blobs.put_bytes(_redacted_copy(doc), f"{asset_id}-redacted", ".pdf", kind="originals")
                for n in held:
                    n.metadata["blob_path"] = blob
                yield from held
        finally:
            doc.close()

    # ------------------------------------------------------------------------------------------
    def _page(self, doc, index: int, path: Path, asset_id: str, common: Dict[str, Any],
              splitter: SentenceSplitter, version: str, keep_blank: bool = False,
              sections: Optional[SectionTracker] = None) -> Optional[List[BaseNode]]:
        """The nodes of one page; None for a blank page (no ink: nothing rendered, nothing OCRed).
        ``sections`` follows the document's headings from page to page (chunk metadata "section")."""
        pm = _pymupdf()
        cfg = self.settings.ingest
        page = doc.load_page(index)
        page_no = index + 1
        source = self.source_name(path)
        prod = dict(producer="pymupdf", producer_version=version)
        nodes: List[BaseNode] = []
        page_errors: List[str] = []

        page_rect = page.rect
        biggest = max(cfg.pdf_render_dpi, cfg.pdf_ocr_dpi) / 72.0
        px = page_rect.width * biggest * page_rect.height * biggest
        if cfg.max_image_pixels and px > cfg.max_image_pixels:
            raise ValueError(f"page too large to render: {page_rect.width:g} x {page_rect.height:g} pt "
                             f"({px:,.0f} pixels at {max(cfg.pdf_render_dpi, cfg.pdf_ocr_dpi)} dpi)")

        # -- the text layer (first: a page without text and without ink needs no work) -----
        try:
            text = page.get_text("text", sort=True) or ""
        except Exception as exc:
            page_errors.append(f"text layer: {exc}")
            text = ""
        text = text.replace("\x00", "").strip()
        if not text and not keep_blank and page_is_blank(page):
            return None
        redacted: Dict[str, int] = {}
        if text and cfg.redact_pii:  # before chunking, and out of the render too
            text, redacted = _redact_page(page, text, cfg.pii_phone_regions)
        try:  # after redaction: redacted words are gone from the page's text layer too
            page_lines = text_lines(page) if text else []
        except Exception as exc:
            page_errors.append(f"text lines: {exc}")
            page_lines = []
        if sections is not None:  # after redaction too: a heading never holds redacted text
            sections.start_page(page if text else None)
        size_pt = dict(page_width_pt=round(page_rect.width, 2), page_height_pt=round(page_rect.height, 2))

        # -- the rendered page ----------------------------------------------------------------
        pix = page.get_pixmap(dpi=cfg.pdf_render_dpi, alpha=False)
        png = pix.tobytes("png")
        tag = "-redacted" if redacted else ""  # never reuse an unredacted render of the same bytes
        render_key = f"{asset_id}-p{page_no}-{cfg.pdf_render_dpi}dpi{tag}"
        render_path = self.blobs.put_bytes(png, render_key, ".png")
        render_img = _png_to_pil(png)
        thumb = self.blobs.thumbnail(render_img, f"{asset_id}-p{page_no}{tag}", cfg.thumbnail_px)
        page_meta = dict(common)
        page_meta.update(
            page=page_no, width=pix.width, height=pix.height, dpi=cfg.pdf_render_dpi,
            bbox=[0, 0, pix.width, pix.height], bbox_units="px", thumbnail_path=thumb,
            page_width_pt=round(page_rect.width, 2), page_height_pt=round(page_rect.height, 2), **prod,
        )
        page_node = make_image_node(asset_id=asset_id, source=source, modality=PAGE, image_path=render_path,
                                    id_parts=(f"p{page_no}",), **page_meta)
        nodes.append(page_node)

        # -- the text layer, chunked ------------------------------------------------------------
        chunks = [c for c in splitter.split_text(text) if c.strip()] if text else []
        for j, chunk in enumerate(chunks):
            meta = dict(common)
            chunk_lines = lines_in(chunk, page_lines)
            meta.update(page=page_no, chunk_index=j, thumbnail_path=thumb, lines=chunk_lines, **size_pt, **prod)
            section = sections.of_lines([ln["bbox"][1] for ln in chunk_lines]) if sections else ""
            if section:
                meta["section"] = section
            node = make_text_node(chunk, asset_id=asset_id, source=source, modality=TEXT,
                                  id_parts=(f"p{page_no}", j), **meta)
            for keys in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
                keys.extend(k for k in size_pt if k not in keys)  # layout numbers: not for models
            if redacted:
                mark_redacted(node)
            nodes.append(node)

        # -- embedded images ------------------------------------------------------------------
        page_area = max(1.0, page_rect.width * page_rect.height)
        coverage = 0.0
        try:
            images = page.get_images(full=True)
        except Exception as exc:
            page_errors.append(f"image list: {exc}")
            images = []
        seen = set()
        for info in images:
            xref, w, h = info[0], info[2], info[3]
            if xref in seen:
                continue
            seen.add(xref)
            try:
                rects = page.get_image_rects(xref)
            except Exception:
                rects = []
            for r in rects:
                r = r & page_rect
                if not r.is_empty:
                    coverage += (r.width * r.height) / page_area
            if min(w, h) < cfg.pdf_min_image_side or not rects:
                continue
            rect = rects[0] & page_rect
            if rect.is_empty:
                continue
            scanned_page = len(text) < MIN_TEXT_CHARS and (rect.width * rect.height) / page_area >= 0.85
            if scanned_page:
                continue  # the page render already is this image
            try:
                ipix = pm.Pixmap(doc, xref)
                if ipix.alpha:
                    ipix = pm.Pixmap(ipix, 0)  # drop alpha
                if ipix.colorspace is None or ipix.colorspace.n not in (1, 3):
                    ipix = pm.Pixmap(pm.csRGB, ipix)
                ipng = ipix.tobytes("png")
            except Exception as exc:
                page_errors.append(f"image xref {xref}: {exc}")
                continue
            img_path = self.blobs.put_bytes(ipng, f"{asset_id}-p{page_no}-x{xref}{tag}", ".png")
            img_thumb = self.blobs.thumbnail(_png_to_pil(ipng), f"{asset_id}-p{page_no}-x{xref}{tag}", cfg.thumbnail_px)
            meta = dict(common)
            meta.update(
                page=page_no, bbox=[round(rect.x0, 2), round(rect.y0, 2), round(rect.x1, 2), round(rect.y1, 2)],
                bbox_units="pt", width=ipix.width, height=ipix.height, xref=xref, thumbnail_path=img_thumb,
                parent_image_id=page_node.node_id, **size_pt, **prod,
            )
            if len(rects) > 1:
                meta["occurrences"] = len(rects)
            nodes.append(make_image_node(asset_id=asset_id, source=source, modality=IMAGE, image_path=img_path,
                                         id_parts=(f"p{page_no}", f"x{xref}"), **meta))

        # -- OCR for scanned pages ------------------------------------------------------------
        needs_ocr = not keep_blank and (not text or (len(text) < MIN_TEXT_CHARS and coverage >= SCAN_COVERAGE))
        page_node.metadata["has_text_layer"] = bool(text)
        if text:  # the page image carries its text layer (a stock LlamaIndex engine reads only content)
            page_node.set_content(text)
        if needs_ocr:
            if self.ocr is None:
                page_node.metadata["needs_ocr"] = True
            else:
                dpi = cfg.pdf_ocr_dpi
                opix = page.get_pixmap(dpi=dpi, alpha=False)
                if opix.n in (1, 3):
                    oimg = Image.frombytes("RGB" if opix.n == 3 else "L", (opix.width, opix.height), opix.samples)
                else:
                    oimg = _png_to_pil(opix.tobytes("png"))
                try:
                    result = self.ocr.recognize(oimg)
                    ocr_redacted = self.redact_ocr(result)
                    meta = dict(common)
                    meta.update(page=page_no, dpi=dpi, bbox_units="px", thumbnail_path=thumb,
                                parent_image_id=page_node.node_id)
                    found = ocr_nodes(result, asset_id=asset_id, source=source, id_prefix=(f"p{page_no}",),
                                      chunk_tokens=cfg.chunk_size, meta=meta)
                    for n in found if ocr_redacted else ():
                        mark_redacted(n)
                    nodes.extend(found)
                    page_node.metadata["orientation"] = result.orientation
                    if found:  # the page image carries what OCR read, for engines that see only content
                        page_node.set_content("\n".join(n.text for n in found))
                except OCRError as exc:
                    page_errors.append(f"OCR: {exc}")
        if page_errors:
            self._warn(path, f"page {page_no}: " + "; ".join(page_errors))
            for n in nodes:
                n.metadata["page_errors"] = list(page_errors)
        return nodes


__all__ = ["PDFReader"]
