"""PDF -> text-layer chunks, page renders, embedded images, and OCR for pages without text.

Per page (``page`` is 1-based):

* ``text`` TextNodes: the page's text layer chunked with LlamaIndex's ``SentenceSplitter``;
* one ``page`` ImageNode: the page rendered at ``pdf_render_dpi`` (``bbox`` = whole render, px);
* ``image`` ImageNodes for embedded raster images with both sides >= ``pdf_min_image_side``
  pixels; their ``bbox`` is where they sit on the page, in PDF points (``bbox_units="pt"``,
  origin top-left, 72 pt per inch). Images covering most of a page without a text layer are the
  scan itself and are represented by the ``page`` node instead;
* an ``ocr`` TextNode for pages without a (meaningful) text layer: rendered at ``pdf_ocr_dpi``;
  word boxes are pixels of that render (``bbox_units="px"``, ``dpi`` says which render).

A page that fails is logged (``reader.warnings``) and skipped; the other pages are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode
from PIL import Image

from ..enrich.ocr import OCRError
from ..errors import IngestError
from ..schema import IMAGE, PAGE, TEXT, make_image_node, make_text_node
from ._common import MMReader, asset_id_of, check_file, ocr_nodes

# A page whose text layer has fewer characters than this and is mostly covered by images is
# treated as scanned (page numbers or a stamp on a scan must not stop OCR).
MIN_TEXT_CHARS = 50
SCAN_COVERAGE = 0.5


def _pymupdf():
    import pymupdf

    return pymupdf


def pymupdf_version() -> str:
    pm = _pymupdf()
    return f"{pm.__version__} (mupdf {getattr(pm, 'mupdf_version', '?')})"


def _has_eof_marker(path: Path, tail: int = 4096) -> bool:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - tail))
        return b"%%EOF" in fh.read()


def _png_to_pil(data: bytes) -> Image.Image:
    import io

    im = Image.open(io.BytesIO(data))
    im.load()
    return im


class PDFReader(MMReader):
    """A PDF file -> text, page, image and ocr nodes (see module docstring)."""

    def lazy_load_data(self, file: Any, extra_info: Optional[Dict[str, Any]] = None) -> Iterator[BaseNode]:  # type: ignore[override]
        path = check_file(file)
        pm = _pymupdf()
        cfg = self.settings.ingest
        has_eof = _has_eof_marker(path)
        try:
            doc = pm.open(str(path), filetype="pdf")
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
            asset_id = asset_id_of(path)
            blob_path = self.blobs.put_file(path, asset_id)
            common = self.common_meta(path, asset_id, "application/pdf", extra_info)
            common.update(blob_path=blob_path, n_pages=n_pages)
            title = ((doc.metadata or {}).get("title") or "").strip()
            if title:
                common["title"] = title
            if doc.is_repaired:
                self._warn(path, "PDF was damaged and repaired by MuPDF; some content may be missing")
                common["pdf_repaired"] = True
            splitter = SentenceSplitter(chunk_size=cfg.chunk_size, chunk_overlap=cfg.chunk_overlap)
            version = pymupdf_version()
            failed = 0
            first_error = ""
            for index in range(n_pages):
                try:
                    nodes = self._page(doc, index, path, asset_id, common, splitter, version)
                except IngestError:
                    raise
                except Exception as exc:  # one broken page must not lose the others
                    failed += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"
                    self._warn(path, f"page {index + 1} failed: {type(exc).__name__}: {exc}")
                    continue
                yield from nodes
            if failed == n_pages:
                raise IngestError(str(path), f"all {n_pages} pages failed to load (first: {first_error})")
        finally:
            doc.close()

    # ------------------------------------------------------------------------------------------
    def _page(self, doc, index: int, path: Path, asset_id: str, common: Dict[str, Any],
              splitter: SentenceSplitter, version: str) -> List[BaseNode]:
        pm = _pymupdf()
        cfg = self.settings.ingest
        page = doc.load_page(index)
        page_no = index + 1
        source = str(path)
        prod = dict(producer="pymupdf", producer_version=version)
        nodes: List[BaseNode] = []
        page_errors: List[str] = []

        # -- the rendered page ----------------------------------------------------------------
        page_rect = page.rect
        biggest = max(cfg.pdf_render_dpi, cfg.pdf_ocr_dpi) / 72.0
        px = page_rect.width * biggest * page_rect.height * biggest
        if cfg.max_image_pixels and px > cfg.max_image_pixels:
            raise ValueError(f"page too large to render: {page_rect.width:g} x {page_rect.height:g} pt "
                             f"({px:,.0f} pixels at {max(cfg.pdf_render_dpi, cfg.pdf_ocr_dpi)} dpi)")
        pix = page.get_pixmap(dpi=cfg.pdf_render_dpi, alpha=False)
        png = pix.tobytes("png")
        render_key = f"{asset_id}-p{page_no}-{cfg.pdf_render_dpi}dpi"
        render_path = self.blobs.put_bytes(png, render_key, ".png")
        render_img = _png_to_pil(png)
        thumb = self.blobs.thumbnail(render_img, f"{asset_id}-p{page_no}", cfg.thumbnail_px)
        page_meta = dict(common)
        page_meta.update(
            page=page_no, width=pix.width, height=pix.height, dpi=cfg.pdf_render_dpi,
            bbox=[0, 0, pix.width, pix.height], bbox_units="px", thumbnail_path=thumb,
            page_width_pt=round(page_rect.width, 2), page_height_pt=round(page_rect.height, 2), **prod,
        )
        page_node = make_image_node(asset_id=asset_id, source=source, modality=PAGE, image_path=render_path,
                                    id_parts=(f"p{page_no}",), **page_meta)
        nodes.append(page_node)

        # -- the text layer -------------------------------------------------------------------
        try:
            text = page.get_text("text", sort=True) or ""
        except Exception as exc:
            page_errors.append(f"text layer: {exc}")
            text = ""
        text = text.replace("\x00", "").strip()
        chunks = [c for c in splitter.split_text(text) if c.strip()] if text else []
        for j, chunk in enumerate(chunks):
            meta = dict(common)
            meta.update(page=page_no, chunk_index=j, thumbnail_path=thumb, **prod)
            nodes.append(make_text_node(chunk, asset_id=asset_id, source=source, modality=TEXT,
                                        id_parts=(f"p{page_no}", j), **meta))

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
            img_path = self.blobs.put_bytes(ipng, f"{asset_id}-p{page_no}-x{xref}", ".png")
            img_thumb = self.blobs.thumbnail(_png_to_pil(ipng), f"{asset_id}-p{page_no}-x{xref}", cfg.thumbnail_px)
            meta = dict(common)
            meta.update(
                page=page_no, bbox=[round(rect.x0, 2), round(rect.y0, 2), round(rect.x1, 2), round(rect.y1, 2)],
                bbox_units="pt", width=ipix.width, height=ipix.height, xref=xref, thumbnail_path=img_thumb,
                parent_image_id=page_node.node_id, **prod,
            )
            if len(rects) > 1:
                meta["occurrences"] = len(rects)
            nodes.append(make_image_node(asset_id=asset_id, source=source, modality=IMAGE, image_path=img_path,
                                         id_parts=(f"p{page_no}", f"x{xref}"), **meta))

        # -- OCR for scanned pages ------------------------------------------------------------
        needs_ocr = not text or (len(text) < MIN_TEXT_CHARS and coverage >= SCAN_COVERAGE)
        page_node.metadata["has_text_layer"] = bool(text)
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
                    meta = dict(common)
                    meta.update(page=page_no, dpi=dpi, bbox_units="px", thumbnail_path=thumb,
                                parent_image_id=page_node.node_id)
                    nodes.extend(ocr_nodes(result, asset_id=asset_id, source=source, id_prefix=(f"p{page_no}",),
                                           chunk_tokens=cfg.chunk_size, meta=meta))
                    page_node.metadata["orientation"] = result.orientation
                except OCRError as exc:
                    page_errors.append(f"OCR: {exc}")
        if page_errors:
            self._warn(path, f"page {page_no}: " + "; ".join(page_errors))
            for n in nodes:
                n.metadata["page_errors"] = list(page_errors)
        return nodes


__all__ = ["PDFReader"]
