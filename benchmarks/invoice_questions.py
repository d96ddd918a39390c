"""Field questions about real third-party invoices, answered offline through the real pipeline.

    HF_HUB_OFFLINE=1 python benchmarks/invoice_questions.py [--invoices DIR] [--cache DIR]
        [--store DIR] [--out results/invoice_questions.json] [--dump-evidence FILE]

The invoices are NOT in this repository and were not written by this project: they are the
sample invoices that the ``invoice2data`` sdist (version 0.4.0, MIT, PyPI) ships under
``tests/compare/`` together with the values its own extractor must find (``<name>.json``:
issuer, invoice_number, amount). Without ``--invoices`` the script fetches that sdist with pip
(``pip download --no-deps --no-binary :all: --no-build-isolation invoice2data==0.4.0``) into
``--cache`` (default ``~/.cache/mmrag_li/invoice2data``) and unpacks only ``tests/compare``.

All invoices go into ONE temporary store (``MultiModalRAG.from_config("default", store_dir=...)``,
``.ingest``), so each question must find its issuer's invoice among the others. Per invoice:

* "What is the invoice number of the invoice from <issuer>?"
* "What is the total amount due on the invoice from <issuer>?" (when the JSON has an amount)
* "Which company issued invoice <number>?" with <number> as the invoice prints it; the right
  answers are in ``ISSUERS``, read off each PDF by hand (not by this system): the seller or
  service provider the invoice names, e.g. "WS Retail Services" (Sold By) or "Flipkart" for the
  Flipkart invoice. The JSON's ``issuer`` is the invoice2data template name, not always printed.

Reported, over all questions:

* ``right``: the offline answer (the extractive answerer's text, before the engine replaces an
  unsupported answer by its refusal) holds the expected value;
* ``supported``: answered (not "I don't know") and ``verification.supported`` (the engine's
  verdict; "I don't know" is trivially supported and counted under ``i_dont_know`` instead);
* ``right_and_supported``: what a user sees as a confirmed right answer;
* ``wrong_but_supported``: supported although the value is wrong or missing (must be 0).

The verifier is given the question (``verify_answer(..., question=q)``), so "the cited evidence
is about the question" is checked even where the engine does not pass the question itself.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SDIST = "invoice2data==0.4.0"

# Per PDF: the invoice number as printed, and the issuer names printed on it (read by hand from
# the PDF text; whole words, case-sensitive). The customer (ALEXINUX, de Lattre Alexis,
# iViveLabs, Taylor Riddel, Anushrut Singh, Sanjay) is never an issuer.
ISSUERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "AmazonWebServices.pdf": ("42183017", ("Amazon Web Services",)),  # "Service Provider: Amazon Web Services, Inc."
    "FlipkartInvoice.pdf": ("#BLR_WFLD20151000982590", ("WS Retail Services", "Flipkart")),  # Sold By / Ordered Through
    "NetpresseInvoice.pdf": ("2022089083", ("NETPRESSE",)),  # footer: "NETPRESSE Siège social ..."
    "QualityHosting.pdf": ("30064443", ("QualityHosting AG",)),  # letterhead
    "SammyMaystoneLinesTest.pdf": ("invoice_number_1", ("Sammy Maystone",)),  # name under "# invoice_number_1"
    "free_fiber.pdf": ("562044387", ("Free",)),  # "Free SAS au capital ..."; "Free Service Abonné"
    "oyo.pdf": ("IBZY2087", ("OYO", "Oravel Stays")),  # booking id; "Payment received by OYO", Oravel Stays Pvt. Ltd.
}


def fetch_invoices(cache: Path) -> Path:
    """Download the invoice2data sdist (once) and unpack its ``tests/compare`` folder.

    Args:
        cache: folder that keeps the sdist and the unpacked files between runs.
    """
    out = cache / "compare"
    if out.is_dir() and any(out.glob("*.pdf")):
        return out
    cache.mkdir(parents=True, exist_ok=True)
    if not list(cache.glob("invoice2data-*.tar.gz")):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "--no-build-isolation", SDIST, "-d", str(cache)], check=True)
    sdist = max(cache.glob("invoice2data-*.tar.gz"))
    out.mkdir(exist_ok=True)
    with tarfile.open(sdist) as tar:
        for m in tar.getmembers():
            if m.isfile() and "/tests/compare/" in "/" + m.name:
                name = Path(m.name).name
                if name.endswith((".pdf", ".json")):
                    data = tar.extractfile(m)
                    if data is not None:
                        (out / name).write_bytes(data.read())
    return out


def load_cases(folder: Path) -> list[dict[str, Any]]:
    """One case per PDF that has an expected-values JSON next to it.

    Args:
        folder: the ``tests/compare`` folder.
    """
    cases = []
    for pdf in sorted(folder.glob("*.pdf")):
        js = pdf.with_suffix(".json")
        if not js.exists():
            continue
        exp = json.loads(js.read_text(encoding="utf-8"))[0]
        cases.append({"pdf": pdf, "issuer": exp["issuer"], "invoice_number": exp.get("invoice_number"),
                      "amount": exp.get("amount")})
    return cases


def questions(case: dict[str, Any]) -> list[dict[str, Any]]:
    """The questions about one invoice with the value each expects.

    Args:
        case: an entry of `load_cases`.
    """
    out = []
    if case["invoice_number"]:
        out.append({"field": "invoice_number", "expected": str(case["invoice_number"]),
                    "question": f"What is the invoice number of the invoice from {case['issuer']}?"})
    if case["amount"] is not None:
        out.append({"field": "amount", "expected": case["amount"],
                    "question": f"What is the total amount due on the invoice from {case['issuer']}?"})
    if case["pdf"].name in ISSUERS:
        number, names = ISSUERS[case["pdf"].name]
        out.append({"field": "issuer", "expected": list(names), "question": f"Which company issued invoice {number}?"})
    return out


def _ident(s: str) -> str:
    return re.sub(r"[^0-9a-z]", "", s.casefold())


def holds_value(answer: str, field: str, expected: Any) -> bool:
    """Does the answer text state the expected value?

    Identifiers are compared without case, spaces and punctuation (``# BLR_WFLD2015...`` ==
    ``#BLR_WFLD2015...``); amounts by value (``34,73`` == ``34.73``, ``$4.11`` == ``4.11``).

    Args:
        answer: the answer text.
        field: "invoice_number", "amount" or "issuer" (any of the names, as whole words).
        expected: the expected value from the JSON, or the issuer names of ``ISSUERS``.
    """
    if field == "issuer":
        text = " ".join(answer.split())
        return any(re.search(r"(?<!\w)" + re.escape(n) + r"(?!\w)", text) for n in expected)
    if field == "invoice_number":
        return _ident(str(expected)) in _ident(answer)
    from mmrag_li.generation.verify import extract_numbers

    want = format(Decimal(str(expected)).normalize(), "f")
    return any(want in vals for _, vals in extract_numbers(answer))


def raw_answer(resp: Any) -> str:
    """The answerer's own text (the engine replaces an unsupported answer by a refusal)."""
    attempts = (resp.metadata or {}).get("attempts") or []
    return str(attempts[0].get("answer")) if attempts else str(resp.response)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from mmrag_li.generation.verify import verify_answer
    from mmrag_li.pipeline import MultiModalRAG

    folder = Path(args.invoices) if args.invoices else fetch_invoices(Path(args.cache).expanduser())
    cases = load_cases(folder)
    store = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="mmrag-invoices-"))
    rag = MultiModalRAG.from_config("default", store_dir=store)
    t = time.perf_counter()
    report = rag.ingest([c["pdf"] for c in cases], progress=False)
    ingest_s = time.perf_counter() - t
    rows: list[dict[str, Any]] = []
    dump: list[dict[str, Any]] = []
    for case in cases:
        for q in questions(case):
            engine = rag.as_query_engine(verifier=functools.partial(verify_answer, question=q["question"]))
            t = time.perf_counter()
            resp = engine.query(q["question"])
            secs = time.perf_counter() - t
            md = resp.metadata or {}
            ver = md.get("verification") or {}
            answered = md.get("answered") is not False
            supported = answered and bool(ver.get("supported", md.get("verified")))
            ans = raw_answer(resp)
            right = holds_value(ans, q["field"], q["expected"])
            rows.append({"invoice": case["pdf"].name, "issuer": case["issuer"], **q, "answer": ans,
                         "shown": resp.response, "right": right, "answered": answered, "supported": supported,
                         "wrong_but_supported": supported and not right,
                         "failed_checks": [c for c in ver.get("checks", []) if c.get("ok") is False][:6],
                         "evidence": [e.get("source", "").rsplit("/", 1)[-1] for e in md.get("evidence", [])],
                         "seconds": round(secs, 2)})
            if args.dump_evidence:
                from llama_index.core.schema import QueryBundle

                nodes = engine.retrieve(QueryBundle(q["question"]))
                ev = engine.build_evidence(nodes, q["question"])
                dump.append({"question": q["question"], "expected": q["expected"], "field": q["field"],
                             "evidence": [{"id": e.id, "source": e.source_name, "page": e.page,
                                           "caption": e.caption, "ocr_text": e.ocr_text, "texts": e.texts}
                                          for e in ev]})
    rag.close()
    n = len(rows) or 1
    summary = {
        "invoices": len(cases), "questions": len(rows),
        "right": sum(r["right"] for r in rows), "supported": sum(r["supported"] for r in rows),
        "i_dont_know": sum(not r["answered"] for r in rows),
        "right_and_supported": sum(r["right"] and r["supported"] for r in rows),
        "wrong_but_supported": sum(r["wrong_but_supported"] for r in rows),
    }
    # Per question type, so the issuer questions can be read apart from the number/total ones.
    summary["by_field"] = {f: {"questions": len(rs), "right": sum(r["right"] for r in rs),
                               "i_dont_know": sum(not r["answered"] for r in rs),
                               "right_and_supported": sum(r["right"] and r["supported"] for r in rs),
                               "wrong_but_supported": sum(r["wrong_but_supported"] for r in rs)}
                           for f in dict.fromkeys(r["field"] for r in rows)
                           for rs in [[r for r in rows if r["field"] == f]]}
    summary.update({k + "_pct": round(100.0 * summary[k] / n, 1)
                    for k in ("right", "supported", "right_and_supported")})
    summary["ingest_s"] = round(ingest_s, 1)
    summary["ingest"] = {"files": getattr(report, "files", None), "failed": len(getattr(report, "failed", []) or [])}
    if args.dump_evidence:
        Path(args.dump_evidence).write_text(json.dumps(dump, indent=1, ensure_ascii=False), encoding="utf-8")
    return {"summary": summary, "rows": rows, "source": f"PyPI sdist {SDIST}, tests/compare"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--invoices", help="folder with <name>.pdf + <name>.json (default: fetch invoice2data 0.4.0)")
    ap.add_argument("--cache", default="~/.cache/mmrag_li/invoice2data", help="where the sdist is kept")
    ap.add_argument("--store", help="store folder (default: a new temporary folder)")
    ap.add_argument("--out", help="also write the JSON report here")
    ap.add_argument("--dump-evidence", help="write each question's evidence items here (for debugging)")
    args = ap.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2, ensure_ascii=False, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    for r in result["rows"]:
        mark = ("RIGHT" if r["right"] else "wrong" if r["answered"] else "abstain") + (" supported" if r["supported"] else "")
        print(f"{mark:16s} {r['question']}\n{'':17s}{r['answer'][:160]}", file=sys.stderr)
    print(json.dumps(result["summary"], indent=2))
    return 1 if result["summary"]["wrong_but_supported"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
