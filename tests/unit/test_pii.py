"""PII redaction with the real validators (phonenumbers, python-stdnum, email-validator)."""

from llama_index.core.schema import TextNode

from mmrag_li.enrich.pii import PIIRedactor, redact_nodes, redact_ocr_result, redact_source, redact_text
from mmrag_li.enrich.types import OCRResult, OCRWord

R = PIIRedactor()


def test_each_kind_is_found_and_replaced_by_its_placeholder():
    text = ("Contact jane.doe+billing@example.co.uk or call +49 30 1234567 / (415) 555-2671. "
            "Pay to IBAN DE89 3704 0044 0532 0130 00 BIC COBADEFFXXX, card 4111 1111 1111 1111.")
    red, counts, _ = R.redact(text)
    assert counts == {"EMAIL": 1, "PHONE": 2, "IBAN": 1, "CARD": 1}
    for secret in ("jane.doe", "1234567", "555-2671", "DE89", "0532", "4111"):
        assert secret not in red, secret
    assert "[EMAIL]" in red and "[PHONE]" in red and "[IBAN] BIC COBADEFFXXX" in red and "[CARD]." in red


def test_lookalikes_are_left_alone():
    text = ("Invoice 4711 of 2024-01-15, total 1,939.00 EUR, order 1234567890123 (not Luhn-valid), "
            "IBAN-like DE00 1234 5678 9012 3456 78 (bad checksum), user@localhost, version 3.10.2.")
    red, counts, _ = R.redact(text)
    assert counts == {} and red == text


def test_national_phone_format_needs_its_region():
    text = "Rufen Sie 030 901820 an."
    assert R.redact(text)[1] == {"PHONE": 1}  # DE is among the default regions
    assert PIIRedactor(phone_regions=["US"]).redact(text)[1] == {}


def test_ocr_words_of_redacted_spans_are_removed_and_counts_recorded():
    words = [{"text": t, "conf": 90.0, "bbox": [i * 10, 0, i * 10 + 8, 10]}
             for i, t in enumerate("Mail bob@example.org or call +1 415 555 2671 today".split())]
    node = TextNode(text="Mail bob@example.org or call +1 415 555 2671 today",
                    metadata={"modality": "ocr", "words": words, "n_words": len(words), "title": "bob@example.org"})
    assert redact_nodes([node], R)
    assert node.text == "Mail [EMAIL] or call [PHONE] today"
    assert [w["text"] for w in node.metadata["words"]] == ["Mail", "or", "call", "today"]
    assert node.metadata["n_words"] == 4
    assert node.metadata["title"] == "[EMAIL]"
    assert node.metadata["pii_redacted"] == {"EMAIL": 2, "PHONE": 1}
    assert "pii_redacted" in node.excluded_embed_metadata_keys


def test_clean_nodes_are_untouched():
    node = TextNode(text="Nothing personal here: 42 rockets.", metadata={"modality": "text"})
    assert not redact_nodes([node], R)
    assert "pii_redacted" not in node.metadata


# -- issue 12 §5: formats that escaped, text redacted before chunking, file names -------------------


def test_ibans_with_dashes_dots_or_lower_case_and_cards_with_dots():
    for iban in ("DE89-3704-0044-0532-0130-00", "de89 3704 0044 0532 0130 00", "de89370400440532013000",
                 "GB82.WEST.1234.5698.7654.32", "fr14 2004 1010 0505 0001 3m02 606"):
        red, counts = redact_text(f"Pay to {iban}, thanks.")
        assert counts == {"IBAN": 1} and red == "Pay to [IBAN], thanks.", iban
    for card in ("4111.1111.1111.1111", "4111 1111 1111 1111", "4111-1111-1111-1111", "5500 - 0000 - 0000 - 0004",
                 "3782.822463.10005"):
        red, counts = redact_text(f"Card {card} expires 12/27.")
        assert counts == {"CARD": 1} and red == "Card [CARD] expires 12/27.", card
    red, counts = redact_text("Mail JANE.DOE@EXAMPLE.COM or call (415) 555-2671 / +44 20 7946 0958.")
    assert counts == {"EMAIL": 1, "PHONE": 2} and "JANE" not in red and "2671" not in red and "0958" not in red


def test_iban_wrapped_over_a_line_break_is_found_in_the_whole_text():
    red, counts = redact_text("Bank details: IBAN DE89 3704\n0044 0532 0130 00\nThank you")
    assert counts == {"IBAN": 1} and "0532" not in red and red.endswith("\nThank you")


def test_ocr_lines_are_redacted_across_lines_before_chunking():
    words = [OCRWord(t, 90.0, (i * 10, line * 20, i * 10 + 8, line * 20 + 10), line)
             for line, text in enumerate(["IBAN DE89 3704", "0044 0532 0130 00 thanks"])
             for i, t in enumerate(text.split())]
    result = OCRResult(words=words, lines=["IBAN DE89 3704", "0044 0532 0130 00 thanks"])
    assert redact_ocr_result(result) == {"IBAN": 1}
    assert result.lines == ["IBAN [IBAN]", " thanks"]
    assert [w.text for w in result.words] == ["IBAN", "thanks"]


def test_pii_in_file_names_is_redacted_keeping_the_rest():
    assert redact_source("/data/in/jane.doe@example.com_cv.pdf") == "/data/in/[EMAIL]_cv.pdf"
    assert redact_source("/x/john_doe@example.org.pdf") == "/x/[EMAIL].pdf"
    assert redact_source("/x/invoice_DE89370400440532013000.txt") == "/x/invoice_[IBAN].txt"
    assert redact_source("/x/call_+49 30 1234567.md") == "/x/call_[PHONE].md"
    assert redact_source("/x/4111.1111.1111.1111.png") == "/x/[CARD].png"
    assert redact_source("/home/u/report 2024-01-15 v3.10.pdf") == "/home/u/report 2024-01-15 v3.10.pdf"
