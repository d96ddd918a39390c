"""One store and one facade for every server test, built once per session.

``examples/data`` is ingested into collection ``public``; a small private corpus (a scanned-looking
ledger image and a note, both carrying the word "zebra") into collection ``private``. The same
facade serves a FastAPI ``TestClient`` app, a keyed app (API key -> collections) and one real
uvicorn server on 127.0.0.1 (a background thread), so the models load once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import pytest

pytest.importorskip("fastapi", reason="server tests need the server extra: pip install -e '.[server]'")
pytest.importorskip("uvicorn", reason="server tests need the server extra: pip install -e '.[server]'")

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "data"
PUBLIC_KEY = "public-key-for-tests"
PRIVATE_KEY = "private-key-for-tests"
ADMIN_KEY = "admin-key-for-tests"
PUBLIC_KEY_ENV = "MMRAG_TEST_PUBLIC_KEY"
CLIENT_HEADER = {"X-MMRAG-Client": "tests"}


@dataclass
class Corpus:
    """The session corpus: folders, the facade and the asset ids tests need."""

    root: Path
    public: Path
    private: Path
    store: Path
    rag: Any
    ids: Dict[str, str]


def _private_files(folder: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    folder.mkdir(parents=True)
    img = Image.new("RGB", (900, 300), "white")
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 42)
    except OSError:
        font = ImageFont.load_default()
    draw.text((40, 40), "ZEBRA LEDGER 9931", font=font, fill="black")
    draw.text((40, 140), "Balance 77,410.00", font=font, fill="black")
    img.save(folder / "zebra_ledger.png")
    (folder / "zebra_notes.md").write_text("# Zebra notes\n\nThe zebra vault code is 4242 and must stay private.\n",
                                           encoding="utf-8")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    """examples/data (collection public) + a private corpus (collection private), ingested once."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from mmrag_li.pipeline import MultiModalRAG

    root = tmp_path_factory.mktemp("server-corpus")
    public = root / "public"
    shutil.copytree(EXAMPLES, public)
    private = root / "private"
    _private_files(private)
    store = root / "store"
    rag = MultiModalRAG.from_config(None, store_dir=store)
    for folder, collection in ((public, "public"), (private, "private")):
        report = rag.ingest([folder], collection=collection, progress=False).to_dict()
        assert not report["failed"], report["failed"]
    ids = {}
    for name in ("invoice_4711.png", "quarterly_report.pdf", "field_notes.md"):
        ids[name] = rag.inspect(str(public / name))["asset_id"]
    for name in ("zebra_ledger.png", "zebra_notes.md"):
        ids[name] = rag.inspect(str(private / name))["asset_id"]
    yield Corpus(root, public, private, store, rag, ids)
    rag.close()


@pytest.fixture(scope="session")
def client(corpus):
    """A TestClient over the shared facade (no keys, every collection visible)."""
    from fastapi.testclient import TestClient

    from mmrag_li.server.app import create_app

    app = create_app(rag=corpus.rag, wait=True)
    with TestClient(app) as c:
        yield c


def key_settings(corpus: Corpus, **server: Any) -> Any:
    """The facade's settings with ``server.*`` replaced (``ingest_roots`` = the corpus root by default)."""
    from mmrag_li.config import ServerConfig

    server.setdefault("ingest_roots", [str(corpus.root)])
    return corpus.rag.settings.model_copy(update={"server": ServerConfig(**server)})


@pytest.fixture(scope="session")
def keyed(corpus):
    """A TestClient whose app needs API keys: public (env var), private (sha256 ref), admin ("*")."""
    from fastapi.testclient import TestClient

    from mmrag_li.server.app import create_app

    os.environ[PUBLIC_KEY_ENV] = PUBLIC_KEY
    os.environ["MMRAG_TEST_ADMIN_KEY"] = ADMIN_KEY
    settings = key_settings(corpus, api_keys={
        PUBLIC_KEY_ENV: ["public"],
        "sha256:" + hashlib.sha256(PRIVATE_KEY.encode()).hexdigest(): ["private"],
        "MMRAG_TEST_ADMIN_KEY": ["*"],
    }, max_upload_mb=1.0, max_upload_files=3)
    app = create_app(rag=corpus.rag, settings=settings, wait=True)
    with TestClient(app) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def live(corpus):
    """One real uvicorn server on 127.0.0.1 (background thread) over the shared facade; its base URL."""
    import uvicorn

    from mmrag_li.server.app import LOOPBACK_HOSTS, create_app

    app = create_app(rag=corpus.rag, settings=key_settings(corpus), allowed_hosts=LOOPBACK_HOSTS, wait=True)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-tests", daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not server.started:
        assert thread.is_alive(), "uvicorn exited during start-up"
        assert time.monotonic() < deadline, "uvicorn did not start in time"
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=30)
