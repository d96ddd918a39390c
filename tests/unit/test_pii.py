"""PII redaction with the real validators (phonenumbers, python-stdnum, email-validator)."""

from llama_index.core.schema import TextNode

from mmrag_li.enrich.pii import PIIRedactor, redact_nodes

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
