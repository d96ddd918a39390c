"""Instrumentation events of the verification step (LlamaIndex ``llama_index.core.instrumentation``).

Retrieval and synthesis use LlamaIndex's own events (``RetrievalStartEvent``/``RetrievalEndEvent``
from the retriever, ``SynthesizeStartEvent``/``SynthesizeEndEvent`` from the engine) and the
``CBEventType.RETRIEVE``/``SYNTHESIZE`` callbacks; checking an answer against its evidence has no
stock event, so it gets these two. Attach a handler with
``get_dispatcher().add_event_handler(handler)`` (the root dispatcher sees every event).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from llama_index.core.instrumentation.events.base import BaseEvent


class VerifyStartEvent(BaseEvent):
    """An answer is about to be checked against its evidence.

    Args:
        answer: the answer text to check.
        evidence_ids: the ids (E1, E2, ...) of the evidence it may cite.
    """

    answer: str
    evidence_ids: List[str]

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "VerifyStartEvent"


class VerifyEndEvent(BaseEvent):
    """An answer was checked.

    Args:
        answer: the answer text that was checked.
        verified: the verdict.
        verification: the verifier's full result as a dict (``Verification.to_dict()``).
    """

    answer: str
    verified: Optional[bool]
    verification: Dict[str, Any]

    @classmethod
    def class_name(cls) -> str:
        """Class name."""
        return "VerifyEndEvent"
