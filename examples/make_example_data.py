"""Regenerate the demo corpus in examples/data/ (the generated files are committed too).

    python examples/make_example_data.py [--skimage-data DIR]

Synthetic files are rendered with Pillow (DejaVu fonts: apt-get install fonts-dejavu-core) and
PyMuPDF. The two photos come from scikit-image's sample data (CC0, see examples/data/README.md):
taken from an installed ``skimage`` package, or from ``--skimage-data DIR`` (e.g. the ``skimage/data``
folder of ``pip download --no-deps scikit-image``, unzipped). Without either, the photos that are
already in examples/data/ are kept.
"""

from __future__ import annotations

import argparse
import io
import random
from pathlib import Path

import pymupdf
from PIL import Image, ImageDraw, ImageFilter, ImageFont

OUT = Path(__file__).resolve().parent / "data"
FONT_DIRS = ["/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF"]
PHOTOS = {"cat_chelsea.jpg": "chelsea.png", "coffee_cup.jpg": "coffee.png"}


def font(size: int, bold: bool = False, mono: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSansMono" if mono else "DejaVuSans"
    name += "-Bold.ttf" if bold else ".ttf"
    for d in FONT_DIRS:
        p = Path(d) / name
        if p.exists():
            return ImageFont.truetype(str(p), size)
    raise SystemExit("DejaVu fonts not found: apt-get install fonts-dejavu-core")


def invoice_png(path: Path) -> None:
    """A rendered invoice: number 4711, line items, total 1,939.00 EUR."""
    img = Image.new("RGB", (900, 1100), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, 900, 110], fill=(32, 64, 120))
    d.text((50, 30), "ACME Optics GmbH", font=font(40, bold=True), fill="white")
    d.text((50, 150), "INVOICE 4711", font=font(48, bold=True), fill="black")
    y = 230
    for line in ["Date: 2024-03-15", "Customer: Muller Labs, Berlin", "Customer no. 88231", "Due: 30 days net"]:
        d.text((50, y), line, font=font(26), fill="black")
        y += 40
    y += 30
    d.line([50, y, 850, y], fill="black", width=2)
    d.text((50, y + 10), "Item", font=font(26, bold=True), fill="black")
    d.text((650, y + 10), "Amount", font=font(26, bold=True), fill="black")
    y += 60
    items = [("Lens kit, 3 pieces", "1,200.00"), ("Tripod T-800", "429.00"), ("Calibration service", "310.00")]
    for name, amount in items:
        d.text((50, y), name, font=font(26), fill="black")
        d.text((650, y), amount, font=font(26, mono=True), fill="black")
        y += 45
    d.line([50, y + 5, 850, y + 5], fill="black", width=2)
    d.text((50, y + 25), "Total", font=font(32, bold=True), fill="black")
    d.text((600, y + 25), "1,939.00 EUR", font=font(32, bold=True), fill="black")
    d.text((50, 1020), "IBAN DE02 1203 0000 0000 2020 51 - thank you for your order", font=font(20), fill=(90, 90, 90))
    img.save(path, optimize=True)


def scanned_pdf(path: Path) -> None:
    """One letter-size page that is only a slightly skewed, greyish 150 dpi 'scan' (no text layer)."""
    dpi = 150
    w, h = int(8.5 * dpi), int(11 * dpi)
    page = Image.new("L", (w, h), 245)
    d = ImageDraw.Draw(page)
    m = int(0.9 * dpi)
    d.text((m, m), "DELIVERY NOTE 0815", font=font(34, bold=True), fill=20)
    body = [
        "Shipment for order 4711 left our warehouse in Hamburg on 2024-03-18.",
        "Contents: lens kit (3 pieces), tripod T-800, calibration certificate.",
        "The parcel weighs 7.4 kg and was handed to the carrier at 14:30.",
        "Please check the goods on arrival and report damage within 5 days.",
        "Questions about this delivery: logistics@acme-optics.example",
        "",
        "Signed: J. Weber, dispatch",
    ]
    y = m + 90
    for line in body:
        d.text((m, y), line, font=font(23), fill=30)
        y += 42
    rng = random.Random(4711)
    for _ in range(1500):  # a little dust
        x, yy = rng.randrange(w), rng.randrange(h)
        d.point((x, yy), fill=rng.randrange(120, 200))
    scan = page.rotate(0.6, resample=Image.Resampling.BICUBIC, fillcolor=245).filter(ImageFilter.GaussianBlur(0.5))
    buf = io.BytesIO()
    scan.save(buf, format="JPEG", quality=60)
    doc = pymupdf.open()
    p = doc.new_page(width=612, height=792)
    p.insert_image(p.rect, stream=buf.getvalue())
    doc.save(path, deflate=True, garbage=3)


def report_pdf(path: Path, photo: Path | None) -> None:
    """Two pages with a real text layer; page 2 embeds a photo."""
    doc = pymupdf.open()
    p1 = doc.new_page(width=612, height=792)
    lines = [
        ("Quarterly Report Q1 2024", 18),
        ("", 11),
        ("Revenue grew to 48,200 EUR, up 12 percent on the previous quarter.", 11),
        ("Invoice 4711 for Muller Labs (1,939.00 EUR) was paid on 2024-04-02.", 11),
        ("The largest cost item was calibration equipment at 9,800 EUR.", 11),
        ("Headcount stayed at 14; one optician joined the Hamburg workshop.", 11),
        ("", 11),
        ("Outlook", 14),
        ("We expect demand for tripods to rise before the summer season.", 11),
    ]
    y = 72
    for text, size in lines:
        if text:
            p1.insert_text((72, y), text, fontsize=size, fontname="helv")
        y += size + 9
    p2 = doc.new_page(width=612, height=792)
    p2.insert_text((72, 72), "Appendix: the break room", fontsize=14, fontname="helv")
    p2.insert_text((72, 96), "Our espresso machine was serviced in March; photo below.", fontsize=11, fontname="helv")
    if photo is not None and photo.exists():
        p2.insert_image(pymupdf.Rect(72, 120, 372, 320), filename=str(photo))
    doc.set_metadata({"title": "Quarterly Report Q1 2024", "author": "ACME Optics"})
    doc.save(path, deflate=True, garbage=3)


NOTES_MD = """# Field Notes

Short notes used by the demo queries.

## Equipment

The tripod T-800 carries up to 8 kg. The lens kit has three lenses: 35 mm, 50 mm and 85 mm.

## Office

The office cat is called Chelsea. She sleeps next to the espresso machine most afternoons.

### Opening hours

Monday to Friday, 9:00 to 17:00. Closed on public holidays.
"""


def photos(skimage_dir: Path | None) -> None:
    src_dir = skimage_dir
    if src_dir is None:
        try:
            import skimage

            src_dir = Path(skimage.__file__).parent / "data"
        except ImportError:
            src_dir = None
    for dst, src in PHOTOS.items():
        if src_dir is None or not (src_dir / src).exists():
            print(f"keep existing {dst} (no scikit-image data found)")
            continue
        im = Image.open(src_dir / src).convert("RGB")
        im.thumbnail((512, 512), Image.Resampling.LANCZOS)
        im.save(OUT / dst, quality=85, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skimage-data", type=Path, default=None, help="folder with scikit-image's chelsea.png, coffee.png")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    photos(args.skimage_data)
    invoice_png(OUT / "invoice_4711.png")
    scanned_pdf(OUT / "delivery_note_scan.pdf")
    report_pdf(OUT / "quarterly_report.pdf", OUT / "coffee_cup.jpg")
    (OUT / "field_notes.md").write_text(NOTES_MD, encoding="utf-8")
    total = 0
    for p in sorted(OUT.iterdir()):
        if p.is_file() and p.name != "README.md":
            total += p.stat().st_size
            print(f"{p.stat().st_size:>9,d}  {p.name}")
    print(f"{total:>9,d}  total")


if __name__ == "__main__":
    main()
