"""The JSON API over TestClient and over a real uvicorn: health, stats, search, query, SSE stream."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

from mmrag_li.present import query_json_from, search_json
from mmrag_li.server.client import ServerClient


def test_healthz_ready_and_page_served(client):
    h = client.get("/healthz")
    assert h.status_code == 200 and h.json()["ready"] is True
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'data-testid="answer"' in page.text and "/static/app.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: everything is served here
    for asset in ("/static/app.js", "/static/app.css"):
        r = client.get(asset)
        assert r.status_code == 200 and len(r.content) > 500
    assert client.get("/openapi.json").json()["paths"]["/api/search"]


def test_healthz_503_while_loading():
    """Until the facade is open and warm, /healthz says loading (503) and data endpoints 503 too."""
    import threading

    from fastapi.testclient import TestClient

    from mmrag_li.config import Settings
    from mmrag_li.server.app import create_app

    gate = threading.Event()

    def slow_factory():
        gate.wait(60)
        raise RuntimeError("stopped by the test")

    app = create_app(settings=Settings(), factory=slow_factory)
    with TestClient(app) as c:
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        assert c.get("/api/search", params={"q": "x"}).status_code == 503
        assert c.get("/").status_code == 200  # the page answers while loading
        gate.set()
        import time

        for _ in range(100):
            h = c.get("/healthz").json()
            if h["status"] != "loading":
                break
            time.sleep(0.1)
        assert h["status"] == "failed" and "stopped by the test" in h["error"]
        assert c.get("/api/search", params={"q": "x"}).status_code == 500
        gate.set()


def test_stats_equal_facade(client, corpus):
    data = client.get("/api/stats").json()
    assert data == json.loads(json.dumps(corpus.rag.stats(), default=str))
    assert data["assets"] >= 8


def test_search_get_equals_library_json(client, corpus):
    r = client.get("/api/search", params={"q": "invoice total", "k": 3})
    assert r.status_code == 200
    data = r.json()
    expected = json.loads(json.dumps(search_json(corpus.rag.retrieve("invoice total", k=3)), default=str))
    assert data == expected
    top = data["results"][0]
    assert top["asset_id"] == corpus.ids["invoice_4711.png"]
    for key in ("asset_id", "source", "page", "score", "scores", "ranks"):
        assert key in top
    assert "nodes" not in top


def test_search_post_json_and_form(client):
    a = client.post("/api/search", json={"q": "invoice total", "k": 2}).json()
    b = client.post("/api/search", data={"q": "invoice total", "k": "2"}).json()
    assert a == b and len(a["results"]) == 2


def test_search_usage_errors(client):
    assert client.get("/api/search").status_code == 400  # neither text nor image
    assert client.get("/api/search", params={"q": "x", "k": 0}).status_code == 422
    assert client.post("/api/search", json={"q": "x", "k": "many"}).status_code == 400
    assert client.post("/api/search", content=b"q=x", headers={"content-type": "text/plain"}).status_code == 415


def test_query_json_and_multipart(client, corpus):
    r = client.post("/api/query", json={"question": "What is the invoice total?"})
    assert r.status_code == 200, r.text
    data = r.json()
    for key in ("answer", "citations", "citation_ids", "verified", "verification", "sources"):
        assert key in data
    assert "1,939.00" in data["answer"] and data["citation_ids"]
    assert any(s["asset_id"] == corpus.ids["invoice_4711.png"] and s["cited"] for s in data["sources"])
    form = client.post("/api/query", data={"question": "What is the invoice total?", "k": "3"})
    assert form.status_code == 200 and form.json()["answer"] == data["answer"]
    assert client.post("/api/query", json={"question": "  "}).status_code == 400


def _events(text: str):
    out = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith("event: "):
            out.append((lines[0][7:], json.loads(lines[1][6:])))
    return out


def test_query_stream_sse(client):
    with client.stream("GET", "/api/query/stream", params={"q": "What is the invoice total?"}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = "".join(r.iter_text())
    events = _events(body)
    names = [e for e, _ in events]
    assert names[-1] == "done" and "token" in names
    streamed = "".join(d["text"] for e, d in events if e == "token")
    done = events[-1][1]
    assert done["answer"] == streamed and done["citation_ids"]
    assert set(done) == set(query_json_from("", {}))


def test_real_uvicorn_search_query_and_client(live, corpus):
    with urllib.request.urlopen(live + "/healthz", timeout=30) as r:
        assert json.loads(r.read())["ready"] is True
    url = live + "/api/search?" + urllib.parse.urlencode({"q": "invoice total", "k": 3})
    with urllib.request.urlopen(url, timeout=120) as r:
        data = json.loads(r.read())
    assert data["results"][0]["asset_id"] == corpus.ids["invoice_4711.png"]
    cli = ServerClient(live, api_key="")
    assert cli.search("invoice total", k=3) == data
    answer = cli.query("What is the invoice total?")
    assert "1,939.00" in answer["answer"]


def test_real_uvicorn_refuses_foreign_host_header(live):
    """DNS-rebinding guard: a Host other than the loopback names is refused."""
    import http.client

    host, port = live.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", "/api/stats", headers={"Host": "evil.example:80"})
    assert conn.getresponse().status == 400
    conn.close()


def test_no_cors_unless_configured(client):
    r = client.get("/api/search", params={"q": "invoice"}, headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in {k.lower() for k in r.headers}
    pre = client.options("/api/search", headers={"Origin": "https://evil.example",
                                                 "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in {k.lower() for k in pre.headers}


def test_cors_only_for_configured_origins(corpus):
    from fastapi.testclient import TestClient

    from mmrag_li.server.app import create_app
    from tests.server.conftest import key_settings

    app = create_app(rag=corpus.rag, settings=key_settings(corpus, cors_origins=["http://ok.example"]), wait=True)
    with TestClient(app) as c:
        ok = c.get("/healthz", headers={"Origin": "http://ok.example"})
        assert ok.headers.get("access-control-allow-origin") == "http://ok.example"
        other = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in {k.lower() for k in other.headers}
