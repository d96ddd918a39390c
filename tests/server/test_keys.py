"""The API-key -> allowed-collections map, enforced on every endpoint through the library's guard:
a public key never sees the private collection (search, query, assets, thumbnails, pages, stats,
ingest, jobs); the private key does; no key or a wrong key is a 401."""

from __future__ import annotations

import pytest

from mmrag_li.server.auth import KeyMap, key_digest
from tests.server.conftest import ADMIN_KEY, CLIENT_HEADER, PRIVATE_KEY, PUBLIC_KEY

PUB = {"X-API-Key": PUBLIC_KEY}
PRIV = {"Authorization": f"Bearer {PRIVATE_KEY}"}
ADMIN = {"X-API-Key": ADMIN_KEY}


def endpoints(corpus):
    aid = corpus.ids["zebra_ledger.png"]
    return [("GET", "/api/search?q=zebra"), ("GET", "/api/stats"), ("GET", f"/api/assets/{aid}"),
            ("GET", f"/api/assets/{aid}/thumbnail"), ("GET", f"/api/assets/{aid}/pages/1.png"),
            ("GET", "/api/query/stream?q=zebra"), ("GET", "/api/jobs/0123"),
            ("POST", "/api/query"), ("POST", "/api/search"), ("POST", "/api/ingest")]


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"},
                                     {"Cookie": "mmrag_key=wrong"}])
def test_no_or_wrong_key_is_401_everywhere(keyed, corpus, headers):
    for method, url in endpoints(corpus):
        r = keyed.request(method, url, headers={**headers, **CLIENT_HEADER},
                          json={"question": "zebra", "q": "zebra"} if method == "POST" else None)
        assert r.status_code == 401, (method, url, r.status_code)
    assert keyed.get("/healthz").status_code == 200  # liveness needs no key
    assert keyed.get("/").status_code == 200 and 'data-keys-required="true"' in keyed.get("/").text


def test_search_is_limited_to_the_keys_collections(keyed, corpus):
    private_ids = {corpus.ids["zebra_ledger.png"], corpus.ids["zebra_notes.md"]}
    pub = keyed.get("/api/search", params={"q": "zebra ledger vault code", "k": 10}, headers=PUB).json()["results"]
    assert not private_ids & {h["asset_id"] for h in pub}
    priv = keyed.get("/api/search", params={"q": "zebra ledger vault code", "k": 10}, headers=PRIV).json()["results"]
    assert private_ids & {h["asset_id"] for h in priv}
    assert corpus.ids["invoice_4711.png"] not in {h["asset_id"] for h in priv}
    form = keyed.post("/api/search", data={"q": "zebra vault", "k": "10"}, headers=PUB).json()["results"]
    assert not private_ids & {h["asset_id"] for h in form}


def test_query_never_cites_hidden_collections(keyed, corpus):
    private_ids = {corpus.ids["zebra_ledger.png"], corpus.ids["zebra_notes.md"]}
    pub = keyed.post("/api/query", json={"question": "What is the zebra vault code?"}, headers=PUB).json()
    assert "4242" not in pub["answer"]
    assert not private_ids & {s["asset_id"] for s in pub["sources"]}
    priv = keyed.post("/api/query", json={"question": "What is the zebra vault code?"}, headers=PRIV).json()
    assert "4242" in priv["answer"]
    stream = keyed.get("/api/query/stream", params={"q": "What is the zebra vault code?"}, headers=PUB).text
    assert "4242" not in stream


def test_assets_pages_of_hidden_collections_are_404(keyed, corpus):
    for name in ("zebra_ledger.png", "zebra_notes.md"):
        aid = corpus.ids[name]
        missing = keyed.get(f"/api/assets/{'f' * 32}", headers=PUB)
        hidden = keyed.get(f"/api/assets/{aid}", headers=PUB)
        assert hidden.status_code == 404 and missing.status_code == 404
        assert hidden.json()["type"] == missing.json()["type"]  # hidden looks exactly like missing
        for suffix in ("/thumbnail", "/pages/1.png"):
            assert keyed.get(f"/api/assets/{aid}{suffix}", headers=PUB).status_code == 404
    ledger = corpus.ids["zebra_ledger.png"]
    assert keyed.get(f"/api/assets/{ledger}", headers=PRIV).status_code == 200
    assert keyed.get(f"/api/assets/{ledger}/pages/1.png", headers=PRIV).status_code == 200
    # the web page's cookie carries the key for <img> requests
    cookie = keyed.get(f"/api/assets/{ledger}/thumbnail", headers={"Cookie": f"mmrag_key={PRIVATE_KEY}"})
    assert cookie.status_code == 200
    invoice = corpus.ids["invoice_4711.png"]
    assert keyed.get(f"/api/assets/{invoice}/thumbnail", headers=PRIV).status_code == 404
    assert keyed.get(f"/api/assets/{invoice}/thumbnail", headers=PUB).status_code == 200


def test_stats_count_only_visible_collections(keyed, corpus):
    full = keyed.get("/api/stats", headers=ADMIN).json()
    pub = keyed.get("/api/stats", headers=PUB).json()
    priv = keyed.get("/api/stats", headers=PRIV).json()
    assert pub["collections"] == ["public"] and priv["collections"] == ["private"]
    assert priv["assets"] == 2 and pub["assets"] >= 6
    assert full["assets"] >= pub["assets"] + priv["assets"]


def test_ingest_and_jobs_respect_collections(keyed, corpus):
    w = {**PUB, **CLIENT_HEADER}
    r = keyed.post("/api/ingest", json={"paths": [str(corpus.private)], "collection": "private"}, headers=w)
    assert r.status_code == 403
    r = keyed.post("/api/ingest", files={"files": ("n.md", b"# note\n\nhello\n", "text/markdown")},
                   data={"collection": "private"}, headers=w)
    assert r.status_code == 403
    r = keyed.post("/api/ingest", json={"paths": [str(corpus.private / "zebra_notes.md")], "collection": "private"},
                   headers={**PRIV, **CLIENT_HEADER})
    assert r.status_code == 202
    job = r.json()["job"]
    assert keyed.get(f"/api/jobs/{job}", headers=PUB).status_code == 404  # another tenant's job
    assert keyed.get(f"/api/jobs/{job}", headers=PRIV).status_code == 200


def test_keymap_resolution():
    km = KeyMap.from_config({"MMRAG_NOT_SET_ANYWHERE": ["a"], key_digest("k2"): ["b"], "sha256:zz": ["c"]},
                            environ={})
    assert km.enabled and km.collections_for("k2") == ("b",)
    assert km.collections_for("") is None and km.collections_for("k3") is None
    assert not KeyMap.from_config({}).enabled
