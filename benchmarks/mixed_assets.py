"""Data and renderers for the mixed dev corpus (``build_devset.py --mixed``): invoice issuers and
layouts, a "scanned" look for rendered PDF pages, and verbatim spans that occur on one page only.

Everything here is deterministic for a given ``random.Random``; nothing is downloaded.
"""

from __future__ import annotations

import io
import random
import re
import zlib
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONTS = {
    "sans": "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "sans_bold": "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "serif": "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf",
    "serif_bold": "/usr/share/fonts/truetype/dejavu/DejaVuSerif-Bold.ttf",
    "mono": "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "cond": "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed.ttf",
    "cond_bold": "/usr/share/fonts/truetype/dejavu/DejaVuSansCondensed-Bold.ttf",
}

# (vendor, city, trade items [(description, unit price)], paraphrase of what was billed)
ISSUERS: List[Tuple[str, str, List[Tuple[str, float]], str]] = [
    ("Bäckerei Sonnenschein", "Berlin", [("Bread rolls (catering)", 0.65), ("Pretzels", 1.20), ("Coffee urn rental", 45.0)],
     "the bakery's bill for catering with bread and pretzels"),
    ("Nordlicht IT Services", "Hamburg", [("Notebook repair (mainboard)", 289.0), ("Replacement keyboard", 79.9),
                                          ("Data recovery", 150.0)], "costs of fixing a broken laptop"),
    ("Grünwald Office Furniture", "Munich", [("Ergonomic office chair", 349.0), ("Height-adjustable standing desk", 599.0)],
     "purchase of new chairs and desks for the office"),
    ("Alpine Print & Copy", "Innsbruck", [("Business cards (500 pcs)", 39.5), ("Flyers A5 (2000 pcs)", 189.0)],
     "printing of business cards and leaflets"),
    ("Hafen Logistics GmbH", "Rostock", [("Freight Hamburg - Rotterdam", 1240.0), ("Pallet storage (30 days)", 18.5),
                                         ("Customs clearance", 95.0)], "shipping, warehousing and customs charges"),
    ("Sunny Garden Landscaping", "Potsdam", [("Lawn mowing", 42.0), ("Hedge trimming", 65.0), ("Tree removal (birch)", 480.0)],
     "gardening work: cutting the lawn and hedges"),
    ("Blue River Translation", "Basel", [("Translation German - English (pages)", 28.0), ("Proofreading (hours)", 55.0)],
     "translating documents from German into English"),
    ("Keller Electrical", "Leipzig", [("Replace fuse box", 620.0), ("Install LED ceiling light", 48.0), ("Call-out fee", 35.0)],
     "electrician who installed new lights"),
    ("Fjord Plumbing & Heating", "Kiel", [("Boiler service", 165.0), ("Replace radiator valve", 38.0), ("Emergency call-out", 90.0)],
     "the plumber who serviced the heating boiler"),
    ("Rheinblick Catering", "Cologne", [("Buffet per person", 24.5), ("Waiting staff (hours)", 32.0), ("Tableware hire", 120.0)],
     "food and waiters for the company party"),
    ("Schwarzwald Timber Works", "Freiburg", [("Oak floorboards (m2)", 64.0), ("Sanding and oiling (m2)", 18.0)],
     "new wooden floor laid and finished"),
    ("Isar Legal Partners", "Munich", [("Contract review (hours)", 210.0), ("Trademark filing fee", 290.0)],
     "lawyers checking a contract and registering a brand"),
    ("Elbe Window Cleaning", "Dresden", [("Window cleaning (floors)", 85.0), ("Skylight cleaning", 60.0)],
     "cleaning the glass of the building"),
    ("Mosel Wine Merchants", "Trier", [("Riesling Spätlese (bottle)", 14.9), ("Pinot Noir (bottle)", 17.5), ("Gift boxes", 4.5)],
     "bottles of wine bought as client gifts"),
    ("Harz Bicycle Workshop", "Goslar", [("E-bike battery replacement", 540.0), ("Brake pads", 22.0), ("Wheel truing", 25.0)],
     "repairs to an electric bicycle"),
    ("Pixelwerk Design Studio", "Stuttgart", [("Logo redesign", 1200.0), ("Brand style guide", 850.0)],
     "a new logo and corporate design"),
    ("Ostwind Solar Installations", "Magdeburg", [("Solar panel 400 W", 210.0), ("Inverter 5 kW", 1150.0), ("Installation", 980.0)],
     "photovoltaic panels put on the roof"),
    ("Weser Pest Control", "Bremen", [("Rodent inspection", 75.0), ("Bait stations (per unit)", 12.0)],
     "getting rid of mice in the warehouse"),
    ("Saale Music School", "Halle", [("Piano lessons (45 min)", 38.0), ("Sheet music", 19.9)],
     "piano teaching for the choir"),
    ("Bodensee Boat Rentals", "Konstanz", [("Sailing boat day hire", 260.0), ("Skipper (hours)", 45.0)],
     "renting a sailboat for a team outing"),
    ("Taunus Veterinary Clinic", "Wiesbaden", [("Vaccination (dog)", 68.0), ("Dental cleaning", 240.0)],
     "the vet's bill for the dog's teeth and jabs"),
    ("Spree Event Technology", "Berlin", [("PA system hire (day)", 320.0), ("Stage lighting (day)", 280.0), ("Technician", 55.0)],
     "sound and light equipment for a concert"),
    ("Eifel Stone Masonry", "Aachen", [("Granite steps (each)", 340.0), ("Wall repointing (m2)", 42.0)],
     "stonework on the front steps and wall"),
    ("Main Locksmith Service", "Frankfurt", [("Door lock cylinder", 89.0), ("Emergency door opening", 120.0), ("Spare keys", 9.5)],
     "being locked out and getting the lock changed"),
]
CUSTOMERS = ["Muller GmbH, Berlin", "Harbour Studio, Hamburg", "Kranich Consulting, Munich", "Bergblick Hotel, Innsbruck",
             "Ostsee Trading, Rostock", "Villa Rosenhof, Potsdam", "Medica Labs, Basel", "Bakery Brandt, Leipzig",
             "Lindenhof School, Kassel", "Atelier Nord, Lübeck", "Sternwarte Cafe, Jena", "Tannen Dental Practice, Ulm"]
LAYOUTS = ("classic", "band", "letter", "boxed")
RECEIPTS = [
    (20931, "CORNER HARDWARE STORE", "2024-03-16",
     [("WOOD SCREWS 4x40 200PC", 2, 6.49), ("WALL PAINT WHITE 5L", 1, 34.90), ("PAINT ROLLER", 1, 7.95)],
     "receipt for wall paint and screws from the DIY shop"),
    (7730, "CAFE MORGENROT", "2024-04-02", [("CAPPUCCINO", 2, 3.60), ("CROISSANT", 1, 2.40), ("APPLE CAKE", 2, 3.90)],
     "what we paid for coffee and cake at the cafe"),
    (44102, "CITY FUEL STATION", "2024-05-27", [("DIESEL 48.3 L", 1, 82.11), ("CAR WASH PREMIUM", 1, 14.00)],
     "filling up the car with diesel and a car wash"),
    (39087, "GREEN LEAF PHARMACY", "2024-06-11",
     [("IBUPROFEN 400MG 20 TABS", 1, 5.95), ("PLASTERS ASSORTED", 2, 3.49), ("SUNSCREEN SPF50", 1, 12.90)],
     "buying painkillers and sun cream at the chemist"),
]


def money(x: float) -> str:
    """``1234.5`` -> ``"1,234.50"``."""
    return f"{x:,.2f}"


def invoice_number(rng: random.Random, i: int) -> str:
    """An invoice number in one of four real-world formats (plain digits, INV-YYYY-NNNN, RE-NNNNN, YYYY/NNNN)."""
    style = i % 4
    if style == 0:
        return str(rng.randrange(10000, 99999))
    if style == 1:
        return f"INV-2024-{rng.randrange(100, 9999):04d}"
    if style == 2:
        return f"RE-{rng.randrange(10000, 99999)}"
    return f"2024/{rng.randrange(1000, 9999)}"


def make_invoices(rng: random.Random) -> List[Dict[str, object]]:
    """One invoice per issuer: number, layout, customer, date, items (description, qty, unit), total."""
    out, seen = [], set()
    for i, (vendor, city, items, para) in enumerate(ISSUERS):
        number = invoice_number(rng, i)
        while number in seen:
            number = invoice_number(rng, i)
        seen.add(number)
        rows = [(d, rng.choice([1, 1, 2, 3, 4, 6, 12]), u) for d, u in items]
        total = sum(q * u for _d, q, u in rows)
        out.append({"number": number, "vendor": vendor, "city": city, "customer": rng.choice(CUSTOMERS),
                    "date": f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}", "items": rows,
                    "total": money(total), "layout": LAYOUTS[i % len(LAYOUTS)], "paraphrase": para,
                    "pdf": i % 3 == 2, "scanned": i % 3 == 1})
    return out


def _f(name: str, px: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONTS[name], px)


def render_invoice_image(inv: Dict[str, object]) -> Image.Image:
    """An A4 page at 150 dpi in the invoice's layout (classic, band, letter or boxed)."""
    w, h = 1240, 1754
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    lay = inv["layout"]
    serif = lay == "letter"
    body = _f("serif" if serif else ("cond" if lay == "boxed" else "sans"), 27)
    bold = _f("serif_bold" if serif else ("cond_bold" if lay == "boxed" else "sans_bold"), 30)
    big = _f("serif_bold" if serif else "sans_bold", 52)
    vendor, number = str(inv["vendor"]), str(inv["number"])
    addr = f"Marktplatz {3 + len(vendor) % 20}, {inv['city']}  ·  VAT ID DE{zlib.crc32(vendor.encode()) % 10**9:09d}"
    if lay == "band":
        d.rectangle((0, 0, w, 210), fill=(30, 60, 110))
        d.text((90, 60), vendor, font=big, fill="white")
        d.text((90, 140), addr, font=body, fill=(220, 220, 235))
        d.text((760, 270), "INVOICE", font=big, fill=(30, 60, 110))
        meta = [("Invoice No.", number), ("Date", str(inv["date"])), ("Customer", str(inv["customer"]).split(",")[0])]
        for j, (k, v) in enumerate(meta):
            d.text((700, 360 + 42 * j), k, font=bold, fill="black")
            d.text((930, 360 + 42 * j), v, font=body, fill="black")
        d.text((90, 300), "Bill to:", font=bold, fill="black")
        d.text((90, 345), str(inv["customer"]), font=body, fill="black")
        y = 560
    elif lay == "letter":
        d.text((90, 80), f"{vendor} · {addr}", font=_f("serif", 20), fill=(80, 80, 80))
        d.text((90, 170), str(inv["customer"]).replace(", ", "\n"), font=body, fill="black")
        d.text((800, 170), f"{inv['city']}, {inv['date']}", font=body, fill="black")
        d.text((90, 340), f"Invoice number {number}", font=bold, fill="black")
        d.text((90, 400), "Dear Sir or Madam, for our services we charge as follows:", font=body, fill="black")
        y = 480
    elif lay == "boxed":
        d.rectangle((80, 80, w - 80, 250), outline="black", width=3)
        d.text((110, 105), vendor.upper(), font=big, fill="black")
        d.text((110, 185), addr, font=body, fill="black")
        d.rectangle((80, 280, 600, 420), outline="black", width=2)
        d.text((100, 295), "INVOICE #", font=bold, fill="black")
        d.text((100, 345), number, font=big, fill="black")
        d.rectangle((640, 280, w - 80, 420), outline="black", width=2)
        d.text((660, 295), f"DATE {inv['date']}", font=body, fill="black")
        d.text((660, 345), f"BILL TO {str(inv['customer']).split(',')[0]}", font=body, fill="black")
        y = 470
    else:  # classic
        d.text((90, 90), vendor, font=bold, fill="black")
        d.text((90, 135), addr, font=body, fill=(60, 60, 60))
        d.text((90, 260), f"INVOICE {number}", font=big, fill="black")
        d.text((90, 350), f"Date: {inv['date']}", font=body, fill="black")
        d.text((90, 395), f"Bill to: {inv['customer']}", font=body, fill="black")
        y = 500
    d.line((90, y, w - 90, y), fill="black", width=2)
    for x, label in ((90, "Description"), (700, "Qty"), (820, "Unit"), (1000, "Amount")):
        d.text((x, y + 12), label, font=bold, fill="black")
    y += 60
    d.line((90, y, w - 90, y), fill="black", width=1)
    for desc, qty, unit in inv["items"]:  # type: ignore[union-attr]
        y += 18
        for x, v in ((90, desc), (700, str(qty)), (820, money(unit)), (1000, money(qty * unit))):
            d.text((x, y), v, font=body, fill="black")
        y += 42
        if lay == "boxed":
            d.line((90, y, w - 90, y), fill=(150, 150, 150), width=1)
    y += 20
    d.line((90, y, w - 90, y), fill="black", width=2)
    d.text((700, y + 20), "Total EUR", font=bold, fill="black")
    d.text((1000, y + 20), str(inv["total"]), font=bold, fill="black")
    d.text((90, h - 200), f"Payment within 14 days quoting invoice {number}.", font=body, fill=(60, 60, 60))
    return img


def write_invoice_pdf(inv: Dict[str, object], path: Path) -> None:
    """A text-layer PDF invoice (PyMuPDF's built-in Helvetica), as accounting software writes them."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page(width=595, height=842)
    number = str(inv["number"])
    page.insert_text((50, 70), str(inv["vendor"]), fontsize=16, fontname="hebo")
    page.insert_text((50, 90), f"{inv['city']} · VAT ID DE{zlib.crc32(str(inv['vendor']).encode()) % 10**9:09d}", fontsize=9)
    page.insert_text((50, 150), f"Invoice no. {number}", fontsize=20, fontname="hebo")
    page.insert_text((50, 180), f"Date: {inv['date']}    Customer: {inv['customer']}", fontsize=10)
    y = 230
    for x, label in ((50, "Description"), (330, "Qty"), (390, "Unit price"), (480, "Amount")):
        page.insert_text((x, y), label, fontsize=10, fontname="hebo")
    for desc, qty, unit in inv["items"]:  # type: ignore[union-attr]
        y += 20
        for x, v in ((50, desc), (330, str(qty)), (390, money(unit)), (480, money(qty * unit))):
            page.insert_text((x, y), v, fontsize=10)
    page.insert_text((390, y + 35), "Total EUR", fontsize=11, fontname="hebo")
    page.insert_text((480, y + 35), str(inv["total"]), fontsize=11, fontname="hebo")
    page.insert_text((50, 780), f"Please quote invoice {number} with your payment.", fontsize=9)
    doc.set_metadata({"title": f"Invoice {number}", "creationDate": "D:20240101000000Z", "modDate": "D:20240101000000Z"})
    doc.save(str(path), no_new_id=True)  # byte-identical on every build
    doc.close()


def render_receipt(rec, rng: random.Random) -> Image.Image:
    """A till receipt (monospace, off-white paper)."""
    number, shop, date, items, _para = rec
    lines = [shop.center(30), "-" * 30, f"RECEIPT NO {number}", f"DATE {date}", "-" * 30]
    total = 0.0
    for desc, qty, unit in items:
        total += qty * unit
        lines += [desc[:30], f"  {qty} x {unit:.2f}".ljust(20) + f"{qty * unit:>10.2f}"]
    lines += ["-" * 30, "TOTAL EUR".ljust(20) + f"{total:>10.2f}", "", "THANK YOU".center(30)]
    img = Image.new("RGB", (640, 80 + 46 * len(lines)), (250, 248, 240))
    d = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        d.text((40, 40 + 46 * i), line, font=_f("mono", 30), fill=(20, 20, 20))
    return img


def scan_look(img: Image.Image, rng: random.Random, strength: float = 1.0) -> Image.Image:
    """Make a clean render look scanned: grey, slightly rotated, uneven paper tone, sensor noise,
    a little blur (the caller saves it as JPEG).

    Args:
        img: the clean page.
        rng: randomness (angle, noise level).
        strength: 0 = clean, 1 = a typical office scan.
    """
    g = img.convert("L")
    angle = rng.uniform(-1.5, 1.5) * strength
    g = g.rotate(angle, resample=Image.BICUBIC, expand=True, fillcolor=int(225 + rng.uniform(-10, 10)))
    a = np.asarray(g).astype(np.float32)
    nrng = np.random.default_rng(rng.randrange(1 << 30))
    ramp = np.linspace(0, rng.uniform(8, 22) * strength, a.shape[1], dtype=np.float32)[None, :]
    a = a * (1 - 0.1 * strength) + 12 * strength - ramp + nrng.normal(0, 7 * strength, a.shape)
    out = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    return out.filter(ImageFilter.GaussianBlur(0.3 + 0.4 * strength * rng.random()))


def save_jpeg(img: Image.Image, path: Path, rng: random.Random) -> None:
    """JPEG at a scanner-like quality (60-80)."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=rng.randrange(60, 80))
    path.write_bytes(buf.getvalue())


def render_pdf_page(pdf: Path, page_no: int, dpi: int = 200) -> Image.Image:
    """Page ``page_no`` (1-based) of ``pdf`` rendered to an RGB image."""
    import pymupdf

    with pymupdf.open(str(pdf)) as doc:
        pix = doc[page_no - 1].get_pixmap(dpi=dpi)
        return Image.frombytes("RGB", (pix.width, pix.height), pix.samples)


def page_texts(pdf: Path) -> List[str]:
    """Each page's text layer, whitespace-collapsed."""
    import pymupdf

    with pymupdf.open(str(pdf)) as doc:
        return [re.sub(r"\s+", " ", doc[i].get_text()).strip() for i in range(doc.page_count)]


def unique_span(text: str, everything_lower: Sequence[str], rng: random.Random, words: int = 10) -> str:
    """``words`` consecutive words of ``text`` (mostly letters, no hyphenation) that occur in exactly
    one of ``everything_lower`` (all texts of the corpus, lower-cased); "" when none is found.

    Args:
        text: one page's text.
        everything_lower: every page/document text of the corpus, lower-cased.
        rng: randomness (where the span starts).
        words: span length.
    """
    toks = text.split()
    if len(toks) < words + 10:
        return ""
    for _attempt in range(60):
        start = rng.randrange(len(toks) // 6, max(len(toks) // 6 + 1, len(toks) - words - 3))
        span_toks = toks[start:start + words]
        span = " ".join(span_toks)
        if any(t.endswith("-") for t in span_toks) or sum(ch.isalpha() for ch in span) < 0.7 * len(span):
            continue
        if sum(span.lower() in other for other in everything_lower) == 1:
            return span
    return ""
