"""Generation layer: evidence, prompts, LLMs, extractive answerer, verification, engines, tools.

Import cost is kept low: LlamaIndex core only; the OpenAI clients and the sentence model load
when used.
"""

from mmrag_li.generation.answer_guard import sanitize_answer
from mmrag_li.generation.chat_engine import VerifiedCitationChatEngine
from mmrag_li.generation.events import VerifyEndEvent, VerifyStartEvent
from mmrag_li.generation.evidence import EvidenceItem, build_evidence, make_thumbnail, neutralize
from mmrag_li.generation.extractive import ExtractiveAnswerer
from mmrag_li.generation.llms import build_llm
from mmrag_li.generation.prompts import (
    CANNOT_VERIFY,
    EXTRACTIVE_PREFIX,
    I_DONT_KNOW,
    STRICT_SYSTEM_PROMPT,
    SYSTEM_PROMPT,
    CitationPrompts,
    build_messages,
)
from mmrag_li.generation.query_engine import VerifiedCitationQueryEngine
from mmrag_li.generation.tools import (
    QA_TOOL_NAME,
    SEARCH_TOOL_NAME,
    CitedQueryEngineTool,
    make_tools,
    rank_assets,
)
from mmrag_li.generation.verify import Verification, verify_answer

__all__ = [
    "CANNOT_VERIFY",
    "CitationPrompts",
    "CitedQueryEngineTool",
    "QA_TOOL_NAME",
    "SEARCH_TOOL_NAME",
    "EXTRACTIVE_PREFIX",
    "EvidenceItem",
    "ExtractiveAnswerer",
    "I_DONT_KNOW",
    "STRICT_SYSTEM_PROMPT",
    "SYSTEM_PROMPT",
    "Verification",
    "VerifiedCitationChatEngine",
    "VerifiedCitationQueryEngine",
    "VerifyEndEvent",
    "VerifyStartEvent",
    "build_evidence",
    "build_llm",
    "build_messages",
    "make_thumbnail",
    "make_tools",
    "rank_assets",
    "neutralize",
    "sanitize_answer",
    "verify_answer",
]
