"""Asset, thumbnail and page endpoints: only ids in the store, only files from the blob store;
every traversal attempt, prefix, path or unknown id is a 404 (TestClient and raw HTTP to uvicorn)."""

from __future__ import annotations

import http.client
import io

import pytest
from PIL import Image

TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%252F..%252Fetc%252Fpasswd",
    "%2Fetc%2Fpasswd",
    "....//....//etc/passwd",
    "..\\..\\etc\\passwd",
    "%00",
    "blobs",
]


def test_asset_equals_inspect(client, corpus):
    aid = corpus.ids["invoice_4711.png"]
    r = client.get(f"/api/assets/{aid}")
    assert r.status_code == 200
    data = r.json()
    assert data["asset_id"] == aid and data["nodes"]
    assert data["source"] == corpus.rag.inspect(aid)["source"]


def test_thumbnail_and_pages(client, corpus):
    img = client.get(f"/api/assets/{corpus.ids['invoice_4711.png']}/thumbnail")
    assert img.status_code == 200 and img.headers["content-type"].startswith("image/")
    Image.open(io.BytesIO(img.content)).verify()
    page = client.get(f"/api/assets/{corpus.ids['invoice_4711.png']}/pages/1.png")
    assert page.status_code == 200 and page.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(page.content)).format == "PNG"
    assert client.get(f"/api/assets/{corpus.ids['invoice_4711.png']}/pages/2.png").status_code == 404
    pdf = corpus.ids["quarterly_report.pdf"]
    for n in (1, 2):
        r = client.get(f"/api/assets/{pdf}/pages/{n}.png")
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).format == "PNG"
    assert client.get(f"/api/assets/{pdf}/thumbnail", params={"page": 2}).status_code == 200
    assert client.get(f"/api/assets/{pdf}/pages/99.png").status_code == 404
    assert client.get(f"/api/assets/{pdf}/pages/0.png").status_code == 404
    # a text file has no picture: 404, not an error
    assert client.get(f"/api/assets/{corpus.ids['field_notes.md']}/thumbnail").status_code == 404


def test_unknown_prefix_and_path_ids_are_404(client, corpus, tmp_path):
    aid = corpus.ids["invoice_4711.png"]
    bodies = set()
    for bad in ["0" * 32, aid[:8], aid[:20], aid.upper(), aid + "00", str(corpus.public / "invoice_4711.png"),
                "invoice_4711.png"]:
        for suffix in ("", "/thumbnail", "/pages/1.png"):
            r = client.get(f"/api/assets/{bad}{suffix}")
            assert r.status_code == 404, (bad, suffix, r.status_code)
            bodies.add(r.json().get("type"))
    assert bodies <= {"AssetNotFoundError", "HTTPError"}


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_traversal_attempts_404_testclient(client, corpus, bad):
    aid = corpus.ids["invoice_4711.png"]
    for url in (f"/api/assets/{bad}", f"/api/assets/{bad}/thumbnail", f"/api/assets/{bad}/pages/1.png",
                f"/api/assets/{aid}/pages/{bad}.png", f"/api/assets/{aid}/pages/{bad}"):
        r = client.get(url)
        assert r.status_code == 404, (url, r.status_code, r.text[:200])
        assert b"root:" not in r.content


def test_traversal_attempts_404_raw_http(live, corpus):
    """Raw request lines (no client-side normalisation) against the real uvicorn."""
    host, port = live.split("//")[1].split(":")
    aid = corpus.ids["invoice_4711.png"]
    for bad in TRAVERSALS:
        for path in (f"/api/assets/{bad}/thumbnail", f"/api/assets/{aid}/pages/{bad}.png",
                     f"/api/assets/{aid}/../../../../etc/passwd", "/static/../../../../etc/passwd",
                     "/static/..%2F..%2F..%2Fetc%2Fpasswd"):
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.putrequest("GET", path, skip_host=True)
            conn.putheader("Host", f"127.0.0.1:{port}")
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            assert resp.status in (400, 404), (path, resp.status)
            assert b"root:" not in body
