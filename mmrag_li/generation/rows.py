"""Label -> value rows of a document field in evidence text (see `focus` for the fields).

`field_rows(text, focus)` splits the text into lines and each line into cells (runs of three or
more spaces separate cells in layout-preserving PDF text; OCR lines are one cell). A cell whose
text matches one of the field's labels (and none of its ``avoid`` labels) starts a row; its
values are the values of the asked kind found, in this order of preference:

1. after the label inside its own cell (``Total 1,939.00``, ``Facture n°562044387 du ...``);
2. in the following cells of the line, up to a cell that is itself a label
   (``Rechnungsnr.   30064443   Kundennr.   47774`` gives 30064443 only);
3. in the column-aligned cell of the next two non-empty lines (``Booking ID`` over ``IBZY2087``;
   ``Invoice Number:`` over ``42183017`` in one-value-per-line text).

Each row carries a quote that is verbatim evidence after whitespace collapsing (``label value``
or, when other text lies between them, ``label … value``), so the offline answerer can quote it
and the verifier can find it.

The issuer of an invoice or receipt usually has no label at all: it is the letterhead, the name
line above the title (``Alpine Print & Copy`` over ``INVOICE 31877``). `letterhead_row` reads it
when a question asks who issued a document and no labelled row states it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from mmrag_li.generation.focus import (
    FieldSpec,
    QuestionFocus,
    loose_numbers,
    typed_values,
)

STRONG, WEAK = 1.0, 0.5
_CELL_RE = re.compile(r"\S+(?:(?:\s{1,2}|\t)(?!\s)\S+)*")
_GENERIC_LABEL_RE = re.compile(r"^[^\d]{2,40}[:：]\s*$")
_DOC_TITLE_RE = re.compile(r"(?i)\b(?:invoice|receipt|bill|rechnung|quittung|facture|re[çc]u)\b")
_ISSUED_Q_RE = re.compile(r"(?i)\b(?:invoice|receipt|bill|rechnung|quittung|facture|re[çc]u|issued)\b")
_NAME_LINE_RE = re.compile(r"[^\W\d_]{2}")
_BILL_TO_RE = re.compile(r"(?i)^\s*(?:bill(?:ed)?|ship(?:ped)?|invoice|sold)\s+to\b")
_INCL_RE = re.compile(r"(?i)\b(?:incl|inkl|including|inclusive|inclus|avec|mit|with)\b")


@dataclass
class Row:
    """One label and the values stated for it.

    Args:
        label: the label cell's text.
        strength: 1.0 for a label naming exactly the field, 0.5 for a looser one.
        values: the values of the asked kind, in order.
        quote: verbatim text (whitespace aside) holding the label and the values.
        line: line number of the label in its text.
    """

    label: str
    strength: float
    values: list[str] = field(default_factory=list)
    quote: str = ""
    line: int = 0


Cell = tuple[int, int, str]


def split_cells(line: str) -> list[Cell]:
    """(start, end, text) of each cell of a line (cells are separated by 3+ spaces or tabs).

    Args:
        line: one line of text.
    """
    return [(m.start(), m.end(), m.group(0)) for m in _CELL_RE.finditer(line.expandtabs(4))]


def label_strength(cell: str, spec: FieldSpec) -> tuple[float | None, int]:
    """(strength, end of the label) when the cell is a label of the field; (0.0, 0) when it is
    the label of a neighbouring field (an avoid word within the label: ``Total HT``,
    ``PO Number``; ``incl. VAT`` does not count); (None, 0) when it is no label of it.

    Args:
        cell: cell text.
        spec: the field.
    """
    strong = [m for p in spec.strong for m in [p.search(cell)] if m]
    found = strong or [m for p in spec.weak for m in [p.search(cell)] if m]
    if not found:
        return None, 0
    first_end = min(m.end() for m in found)
    for p in spec.avoid:
        for m in p.finditer(cell):
            if m.start() <= first_end + 12 and not _INCL_RE.search(cell[max(0, m.start() - 12):m.start()]):
                return 0.0, 0
    return (STRONG if strong else WEAK), max(m.end() for m in found)


def is_label(cell: str, spec: FieldSpec | None) -> bool:
    """Is this cell a label (of this field, of a neighbour, or any ``Something:`` cell)?

    Args:
        cell: cell text.
        spec: the field (or None).
    """
    if _GENERIC_LABEL_RE.match(cell):
        return True
    return spec is not None and label_strength(cell, spec)[0] is not None


def _values(text: str, focus: QuestionFocus, exclude: Sequence[str]) -> list[str]:
    vals = typed_values(text, focus.kind, exclude)
    if not vals and focus.kind == "amount":
        vals = [v for v in loose_numbers(text, exclude)]
    return vals


def field_rows(text: str, focus: QuestionFocus, *, loose: bool = False) -> list[Row]:
    """The rows of ``focus.field`` in ``text`` (see module docstring), in text order.

    Args:
        text: one evidence text (OCR text, a text chunk or a caption).
        focus: the question focus; without a field there are no rows.
        loose: amounts also without cents or currency (for checking claims such as "is 42").
    """
    spec = focus.field
    if spec is None or not text:
        return []
    exclude = [t.lower() for t in focus.entity_tokens if any(c.isdigit() for c in t)]
    lines = text.splitlines()
    cells = [split_cells(ln) for ln in lines]
    rows: list[Row] = []
    for i, line_cells in enumerate(cells):
        for ci, (start, end, cell) in enumerate(line_cells):
            strength, lab_end = label_strength(cell, spec)
            if not strength:
                continue
            row = Row(label=cell, strength=strength, line=i)
            strict = typed_values(cell[lab_end:], focus.kind, exclude)
            own = strict or (_values(cell[lab_end:], focus, exclude) if loose else [])
            if own:
                row.values, row.quote = own, cell
            else:
                _same_line(row, line_cells, ci, spec, focus, exclude, loose)
                if not row.values:
                    _below(row, cells, lines, i, (start, end), spec, focus, exclude, loose)
            if row.values:
                rows.append(row)
    return rows


def _same_line(row: Row, line_cells: list[Cell], ci: int, spec: FieldSpec, focus: QuestionFocus,
               exclude: Sequence[str], loose: bool) -> None:
    parts = [line_cells[ci][2]]
    for _, _, nxt in line_cells[ci + 1:]:
        if is_label(nxt, spec):
            break
        parts.append(nxt)
        vals = typed_values(nxt, focus.kind, exclude) or (_values(nxt, focus, exclude) if loose else [])
        if vals:
            row.values.extend(vals)
            row.quote = " ".join(parts)
            if focus.kind != "amount":
                return


def _below(row: Row, cells: list[list[Cell]], lines: list[str], i: int, span: tuple[int, int], spec: FieldSpec,
           focus: QuestionFocus, exclude: Sequence[str], loose: bool) -> None:
    only_label = len(cells[i]) == 1
    seen = 0
    for j in range(i + 1, min(len(lines), i + 8)):
        if not cells[j]:
            continue
        seen += 1
        if seen > 2:
            return
        s0, e0 = span
        aligned = [c for c in cells[j] if c[0] < e0 + 2 and c[1] > s0 - 2] or (cells[j][:1] if only_label else [])
        for _, _, cell in aligned[:1]:
            if is_label(cell, spec):
                return
            vals = typed_values(cell, focus.kind, exclude) or (_values(cell, focus, exclude) if loose else [])
            if vals:
                row.values = vals[:1] if focus.kind == "identifier" else vals
                adjacent = only_label and len(cells[j]) == 1 and seen == 1
                row.quote = f"{row.label} {cell}" if adjacent else f"{row.label} … {cell}"
                return


def best_value_rows(texts: Sequence[str], focus: QuestionFocus, *, loose: bool = False) -> list[Row]:
    """All rows of the field over several texts (an evidence item's OCR, text chunks, caption).

    Args:
        texts: the texts.
        focus: the question focus.
        loose: as for `field_rows`.
    """
    out: list[Row] = []
    for t in texts:
        out.extend(field_rows(t, focus, loose=loose))
    return out


def letterhead_row(text: str, focus: QuestionFocus, *, top: int = 3) -> Row | None:
    """The issuer as the unlabelled name line at the top of an invoice or receipt, or None.

    Only for a question that asks who issued a document (``focus.field`` is the issuer and the
    question names an invoice/receipt/bill or says "issued"), and only when the text has a title
    line (``INVOICE 90342``, ``RECEIPT NO 7730``) within its first ``top`` non-empty lines: the
    name must sit ABOVE that title, where a letterhead is. A line with digits (address, VAT id), a
    colon (a label such as ``Bill to:``), a link or more than eight words is no name. A name
    below the title could be the customer's, so there is no row then (the answer is "I don't
    know", not a guess), unless a ``Bill To:`` block follows it (`_sender_block_row`).

    Args:
        text: one evidence text (OCR text or the first text chunk of page 1).
        focus: the question focus.
        top: how many non-empty lines from the top are searched for the title.
    """
    if focus.field is None or focus.field.name != "issuer" or not text or not _ISSUED_Q_RE.search(focus.question):
        return None
    lines = [(i, ln.strip()) for i, ln in enumerate(text.splitlines()) if ln.strip()][:top]
    title = next((k for k, (_, ln) in enumerate(lines) if _DOC_TITLE_RE.search(ln)), None)
    if title is None:
        return None
    for i, ln in lines[:title]:
        if _is_name_line(ln):
            cell = " ".join(ln.split())
            return Row(label="", strength=WEAK, values=[cell], quote=cell, line=i)
    return _sender_block_row(text, title)


def _is_name_line(line: str) -> bool:
    cell = " ".join(line.split())
    return not (re.search(r"\d|[:：@]|www\.|https?:", cell) or not _NAME_LINE_RE.search(cell)
                or len(cell.split()) > 8 or len(cell) > 60)


def _sender_block_row(text: str, title: int) -> Row | None:
    """The sender block UNDER the title, when a ``Bill To:`` block follows it: ``INVOICE`` /
    ``# invoice_number_1`` / ``Sammy Maystone`` / ``smaystone4@fake.com`` / ``Bill To:`` (the
    sender comes before the recipient). Without a ``Bill To:`` within three lines after it, a
    name under the title could be the customer's, so there is no row."""
    lines = [(i, ln.strip()) for i, ln in enumerate(text.splitlines()) if ln.strip()]
    for k in range(title + 1, min(len(lines), title + 3)):
        i, ln = lines[k]
        if re.search(r"\d", ln) and not _NAME_LINE_RE.search(re.sub(r"[#\w]*\d[\w\-/]*", "", ln)):
            continue  # the title's id line ("# invoice_number_1")
        if not _is_name_line(ln):
            return None
        if any(_BILL_TO_RE.search(nxt) for _, nxt in lines[k + 1:k + 4]):
            cell = " ".join(ln.split())
            return Row(label="", strength=WEAK, values=[cell], quote=cell, line=i)
        return None
    return None
