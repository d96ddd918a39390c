"""Uploads: size limits (whole body and per file), type sniffing, decompression bombs, query images,
and ingest jobs (uploads and server paths) that end up searchable. Uses the keyed app (1 MB limit,
3 files) with the admin key."""

from __future__ import annotations

import io
import time

from PIL import Image

from tests.conftest import bomb_png_bytes
from tests.server.conftest import ADMIN_KEY, CLIENT_HEADER

ADMIN = {"X-API-Key": ADMIN_KEY}
WRITE = {**ADMIN, **CLIENT_HEADER}


def png_bytes(size=(300, 120), color="white") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def wait_job(keyed, job_id: str, headers=ADMIN, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        data = keyed.get(f"/api/jobs/{job_id}", headers=headers).json()
        if data["state"] in ("done", "failed"):
            return data
        assert time.monotonic() < deadline, data
        time.sleep(0.3)


def test_body_over_limit_is_413_before_reading(keyed):
    big = b"x" * (1024 * 1024 + 10)
    r = keyed.post("/api/search", files={"image": ("big.png", big, "image/png")}, data={"q": "x"}, headers=ADMIN)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = keyed.post("/api/ingest", files={"files": ("big.txt", big, "text/plain")}, headers=WRITE)
    assert r.status_code == 413


def test_body_over_limit_without_content_length_is_413(keyed):
    def chunks():
        for _ in range(40):
            yield b"y" * 65536

    r = keyed.post("/api/query", content=chunks(), headers={**ADMIN, "content-type": "application/json"})
    assert r.status_code == 413


def test_query_image_upload_search(keyed, corpus):
    invoice = (corpus.public / "invoice_4711.png").read_bytes()
    r = keyed.post("/api/search", files={"image": ("q.png", invoice, "image/png")}, data={"k": "3"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert corpus.ids["invoice_4711.png"] in [h["asset_id"] for h in r.json()["results"]]


def test_query_image_must_be_an_image(keyed, corpus):
    pdf = (corpus.public / "quarterly_report.pdf").read_bytes()
    r = keyed.post("/api/search", files={"image": ("q.png", pdf, "image/png")}, headers=ADMIN)
    assert r.status_code == 400 and "PDF" in r.json()["error"]
    r = keyed.post("/api/search", files={"image": ("q.png", b"not an image at all", "image/png")}, headers=ADMIN)
    assert r.status_code == 400
    r = keyed.post("/api/search", files={"image": ("bomb.png", bomb_png_bytes(), "image/png")}, headers=ADMIN)
    assert r.status_code == 400 and "bomb" in r.json()["error"]


def test_ingest_upload_refusals(keyed):
    r = keyed.post("/api/ingest", files={"files": ("a.txt", b"hello", "text/plain")}, headers=ADMIN)
    assert r.status_code == 403 and "X-MMRAG-Client" in r.json()["error"]  # CSRF guard
    r = keyed.post("/api/ingest", files={"files": ("x.zip", b"PK\x03\x04" + b"\0" * 200, "application/zip")},
                   headers=WRITE)
    assert r.status_code == 415
    r = keyed.post("/api/ingest", files={"files": ("bomb.png", bomb_png_bytes(), "image/png")}, headers=WRITE)
    assert r.status_code == 413 and "bomb" in r.json()["error"]
    many = [("files", (f"n{i}.txt", b"note", "text/plain")) for i in range(4)]
    assert keyed.post("/api/ingest", files=many, headers=WRITE).status_code == 413
    assert keyed.post("/api/ingest", files={"files": ("a.txt", b"x", "text/plain")}, data={"collection": "../x"},
                      headers=WRITE).status_code == 400


def test_ingest_upload_job_makes_it_searchable(keyed, corpus):
    note = b"# Quokka report\n\nThe quokka census counted 5150 quokkas on the island.\n"
    r = keyed.post("/api/ingest", files=[("files", ("../../quokka report.md", note, "text/markdown"))],
                   data={"collection": "uploads"}, headers=WRITE)
    assert r.status_code == 202, r.text
    job = wait_job(keyed, r.json()["job"])
    assert job["state"] == "done", job
    assert job["report"]["failed"] == [] and job["inputs"] == ["quokka report.md"]
    saved = list((corpus.store / "uploads").rglob("*.md"))
    assert saved and all(corpus.store / "uploads" in p.parents for p in saved)  # the name cannot escape
    hits = keyed.get("/api/search", params={"q": "quokka census"}, headers=ADMIN).json()["results"]
    assert hits and "quokka" in hits[0]["source"]


def test_ingest_server_paths_only_inside_roots(keyed, corpus, tmp_path):
    outside = tmp_path / "outside.md"
    outside.write_text("outside the roots\n", encoding="utf-8")
    r = keyed.post("/api/ingest", json={"paths": [str(outside)]}, headers=WRITE)
    assert r.status_code == 403
    r = keyed.post("/api/ingest", json={"paths": [str(corpus.root / ".." / tmp_path.name)]}, headers=WRITE)
    assert r.status_code == 403
    r = keyed.post("/api/ingest", json={"paths": [str(corpus.public / "field_notes.md")], "collection": "public"},
                   headers=WRITE)
    assert r.status_code == 202, r.text
    job = wait_job(keyed, r.json()["job"])
    assert job["state"] == "done" and job["report"]["skipped_unchanged"] == 1


def test_ingest_server_paths_off_by_default(client, corpus):
    r = client.post("/api/ingest", json={"paths": [str(corpus.public)]}, headers=CLIENT_HEADER)
    assert r.status_code == 403 and "ingest_roots" in r.json()["error"]
