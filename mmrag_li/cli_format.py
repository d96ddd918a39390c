"""Human-readable output of ``mmrag`` (the ``--json`` documents are printed as they are).

Everything that comes from a file (names, OCR text, snippets, answers) goes through
:func:`clean` first: control characters are shown as ``\\x1b``-style escapes, so a hostile
file name cannot move the cursor, recolour the terminal or forge extra output lines.
"""

from __future__ import annotations

import os
import unicodedata
from typing import Any, List, Mapping, Optional, Sequence

from mmrag_li.present import answer_sources, search_rows as result_rows  # noqa: F401  (the --json rows)

# bidirectional overrides/isolates and line/paragraph separators: invisible, but they reorder or
# break what a terminal shows
_INVISIBLE = {0x200E, 0x200F, 0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069,
              0x2028, 0x2029, 0xFEFF}


def _escape(ch: str) -> str:
    o = ord(ch)
    if o < 0x100:
        return f"\\x{o:02x}"
    return f"\\u{o:04x}"


def clean(text: Any, keep_newlines: bool = False) -> str:
    """``text`` as a string safe to print on a terminal.

    Args:
        text: anything; ``None`` prints as ``-``.
        keep_newlines: keep ``\\n`` and ``\\t`` (multi-line answers and text); file names and
            single-line fields escape them too.
    """
    if text is None:
        return "-"
    s = str(text)
    out = []
    for ch in s:
        if keep_newlines and ch in "\n\t":
            out.append(ch)
        elif ord(ch) in _INVISIBLE or unicodedata.category(ch) == "Cc":
            out.append(_escape(ch))
        else:
            out.append(ch)
    return "".join(out)


def rel(path: Optional[str]) -> str:
    """A path relative to the working directory when that is shorter, escaped for the terminal."""
    if not path:
        return "-"
    try:
        r = os.path.relpath(path)
        path = r if len(r) < len(path) else path
    except ValueError:
        pass
    return clean(path)


def _page(page: Any) -> str:
    return f" p.{page}" if page not in (None, "", 0) else ""


# ---- ingest ------------------------------------------------------------------------------------
def format_ingest(data: Mapping[str, Any], prune: bool = False) -> str:
    """``mmrag ingest``: new/changed/unchanged/failed counts, where it stored, what failed."""
    failed = list(data.get("failed") or [])
    unchanged = int(data.get("skipped_unchanged") or 0)
    if "new" in data and "changed" in data:
        head = f"{data['new']} new, {data['changed']} changed, {unchanged} unchanged, {len(failed)} failed"
    else:  # an older report without the split: count what was read
        read = max(int(data.get("files") or 0) - unchanged - len(failed), 0)
        head = f"{read} new or changed, {unchanged} unchanged, {len(failed)} failed"
    lines = [f"{head}  ({data.get('files', 0)} file(s) seen, {float(data.get('seconds') or 0):.1f} s)",
             f"store: {clean(data.get('store'))}  collection: {clean(data.get('collection'))}"]
    added = {k: v for k, v in (data.get("nodes") or {}).items() if v}
    lines.append("nodes added: " + (", ".join(f"{k}={v}" for k, v in added.items()) if added else "none"))
    extra = []
    if data.get("duplicates"):
        extra.append(f"duplicates: {data['duplicates']}")
    if prune or data.get("pruned"):
        extra.append(f"pruned: {data.get('pruned', 0)}")
    if data.get("timed_out"):
        extra.append(f"timed out: {data['timed_out']}")
    if extra:
        lines.append("  ".join(extra))
    for skip in data.get("prune_skipped") or []:  # --prune removed nothing under these: say why
        lines.append(f"NOT PRUNED under {rel(skip.get('path'))}: {clean(skip.get('reason'))}")
    for note in data.get("recovered") or []:
        lines.append(f"recovered: {clean(note)}")
    warnings = data.get("warnings") or []
    if warnings:
        lines.append(f"warnings for {len(warnings)} file(s):")
        for w in warnings[:20]:
            lines.append(f"  {rel(w.get('path'))}: {clean('; '.join(map(str, w.get('warnings') or [])))}")
    if failed:
        lines.append(f"FAILED {len(failed)} file(s) (the others were stored):")
        lines += [f"  {rel(f.get('path'))}: {clean(f.get('reason'))}" for f in failed]
    return "\n".join(lines)


# ---- inspect -------------------------------------------------------------------------------------
def format_inspect(data: Mapping[str, Any]) -> str:
    """``mmrag inspect``: one block per node with its text, OCR words and boxes."""
    nodes = data.get("nodes") or []
    lines = [f"asset {data['asset_id']}  source {rel(data.get('source'))}  ({len(nodes)} nodes)"]
    for n in nodes:
        m = n.get("metadata") or {}
        head = f"- [{clean(n.get('modality'))}] {clean(n.get('id'))}{_page(m.get('page'))}"
        if m.get("ocr_engine"):
            head += f"  ocr={clean(m.get('ocr_engine'))}/{clean(m.get('ocr_lang'))} conf={m.get('ocr_conf')}"
        if m.get("width"):
            head += f"  {m.get('width')}x{m.get('height')}" + (f" @{m.get('dpi')}dpi" if m.get("dpi") else "")
        lines.append(head)
        text = (n.get("text") or "").strip().replace("\n", " | ")
        if text:
            lines.append(f"    text: {clean(text[:300])}{'…' if len(text) > 300 else ''}")
        words = m.get("words") or []
        for w in words[:8]:
            lines.append(f"    word '{clean(w.get('text'))}' conf={w.get('conf')} bbox={w.get('bbox')}")
        if len(words) > 8:
            lines.append(f"    … {len(words) - 8} more words")
        if m.get("bbox"):
            lines.append(f"    bbox: {m.get('bbox')}")
    return "\n".join(lines)


# ---- search ---------------------------------------------------------------------------------------
def format_results(rows: Sequence[Mapping[str, Any]]) -> str:
    """``mmrag search``: rank, score, file and page, per-retriever scores, why and snippet."""
    if not rows:
        return "no results"
    out = []
    for i, r in enumerate(rows, 1):
        out.append(f"{i:>2}. {float(r['score']):.4f}  {rel(r.get('source'))}{_page(r.get('page'))}"
                   f"  [{str(r['asset_id'])[:12]}]")
        ranks = r.get("ranks") or {}
        scores = r.get("scores") or {}
        if scores:
            out.append("      " + "  ".join(f"{k}={float(v):.3f}(#{ranks.get(k)})" for k, v in scores.items()))
        if r.get("why"):
            out.append(f"      why: {clean(r['why'])}")
        if r.get("snippet"):
            out.append(f"      “{clean(r['snippet'])}”")
    return "\n".join(out)


# ---- query ----------------------------------------------------------------------------------------
def _yes(value: Any) -> str:
    return "yes" if value else "no"


def _check_line(c: Any) -> str:
    if not isinstance(c, Mapping):
        return clean(c)
    ok = c.get("ok", c.get("passed"))
    text = c.get("detail") or c.get("message") or c.get("claim") or ", ".join(f"{k}={v}" for k, v in c.items())
    return ("" if ok is None else ("ok: " if ok else "FAILED: ")) + clean(text)


def _verdict_lines(data: Mapping[str, Any]) -> List[str]:
    ver = data.get("verification")
    if not isinstance(ver, Mapping):  # an older engine: a list of reasons
        ver = {"reasons": list(ver or [])}
    supported = ver.get("supported", ver.get("verified", data.get("verified")))
    head = f"supported by the cited evidence: {_yes(supported)}"
    if "citations_valid" in ver:
        head = f"citations valid: {_yes(ver['citations_valid'])}   " + head
    return [head] + [f"  - {_check_line(c)}" for c in (ver.get("checks") or ver.get("reasons") or [])]


def format_answer(data: Mapping[str, Any]) -> str:
    """``mmrag query``: the answer, the verdict, and every evidence item (cited or not)."""
    lines = [clean(data.get("answer"), keep_newlines=True), ""]
    lines += _verdict_lines(data)
    sources = data.get("sources") or []
    if sources:
        lines.append("evidence (cited = the answer relies on it):")
    snippets = {c.get("id"): c.get("snippet") for c in data.get("citations") or [] if isinstance(c, Mapping)}
    for s in sources:
        mark = "cited  " if s.get("cited") else "uncited"
        score = f"  score={float(s['score']):.4f}" if s.get("score") is not None else ""
        lines.append(f"  [{clean(s.get('id'))}] {mark} {rel(s.get('source'))}{_page(s.get('page'))}{score}")
        if s.get("cited") and snippets.get(s.get("id")):
            lines.append(f"      “{clean(snippets[s.get('id')])}”")
    return "\n".join(lines)


# ---- stats / delete -------------------------------------------------------------------------------
def format_stats(data: Mapping[str, Any]) -> str:
    """``mmrag stats``: assets, nodes per collection, files per manifest status."""
    lines = [f"store {clean(data.get('store'))} ({clean(data.get('backend'))}): {data.get('assets')} assets"]
    lines += [f"  {clean(k)}: {v}" for k, v in (data.get("nodes") or {}).items()]
    if data.get("files"):
        lines.append("  files: " + ", ".join(f"{clean(k)}={v}" for k, v in data["files"].items()))
    return "\n".join(lines)


def format_gc(data: Mapping[str, Any]) -> str:
    """``mmrag gc``: unreferenced blobs and old table versions removed, and the bytes freed."""
    def mb(n: Any) -> str:
        return f"{int(n or 0) / 1048576:.2f} MB"

    lines = [f"removed {data.get('blobs_removed', 0)} unreferenced blob(s) ({mb(data.get('blob_bytes_freed'))}) and "
             f"{data.get('versions_removed', 0)} old table version(s) ({mb(data.get('version_bytes_freed'))})"]
    if data.get("blobs_kept_recent"):
        lines.append(f"kept {data['blobs_kept_recent']} unreferenced blob(s) younger than store.gc_grace_s (an ingest "
                     "may still reference them); `mmrag gc --grace 0` removes them when no ingest is running")
    return "\n".join(lines)


def format_eval_done(written: Sequence[str]) -> str:
    return "mmrag eval: wrote " + ", ".join(clean(w) for w in written)
