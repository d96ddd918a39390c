"""Build the chat LLM from `LLMConfig`.

* ``openai``: ``llama_index.llms.openai.OpenAI`` (a multimodal chat model such as gpt-4o-mini takes
  ``ChatMessage(blocks=[TextBlock, ImageBlock])`` directly).
* ``openai_like`` or any config/argument with an API base: ``OpenAILike(is_chat_model=True)`` for
  local OpenAI-compatible servers (vLLM, llama.cpp server, Ollama, LM Studio, ...).
* ``extractive``: None; the query engine then uses the offline `ExtractiveAnswerer`.

Which server gets the API key (`api_key_for`): the key in ``llm.api_key_env`` goes only to the
configured backend's own host over HTTPS (``https://api.openai.com`` for ``openai``) and to the
one server named in ``llm.api_key_base_url``. A custom ``api_base`` / ``--llm-base-url`` never
receives ``$OPENAI_API_KEY`` implicitly: it gets the placeholder ``"not-needed"`` instead.

Not used on purpose: ``llama-index-multi-modal-llms-openai`` (``OpenAIMultiModal``) is deprecated
in favour of the chat LLM above, and it pins ``llama-index-llms-openai<0.7``, which conflicts with
current ``llama-index-llms-openai-like``.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple
from urllib.parse import urlsplit

from mmrag_li.config import LLMConfig
from mmrag_li.errors import ConfigError, ModelUnavailableError

DEFAULT_CONTEXT_WINDOW = 32768
# The host each backend's key is issued for (sent there over HTTPS only).
DEFAULT_HOSTS = {"openai": "https://api.openai.com"}
NO_KEY = "not-needed"


def _origin(url: str) -> Tuple[str, str, Optional[int]]:
    u = urlsplit(url.strip() if "://" in url else "https://" + url.strip())
    scheme = (u.scheme or "https").lower()
    try:
        port = u.port
    except ValueError:
        port = -1
    return scheme, (u.hostname or "").lower().rstrip("."), port or {"https": 443, "http": 80}.get(scheme)


def api_key_for(cfg: LLMConfig, url: Optional[str] = None) -> str:
    """The API key to send to ``url`` (None = the backend's own host), or "" when it gets none.

    Args:
        cfg: the `LLMConfig`; ``api_key_env`` names the key's environment variable, ``backend``
            its own host (`DEFAULT_HOSTS`), ``api_key_base_url`` one more server allowed to get it.
        url: the base URL the request goes to.
    """
    env = (cfg.api_key_env or "").strip()
    target = (url or "").strip() or DEFAULT_HOSTS.get(cfg.backend, "")
    if not env or not target:
        return ""
    allowed = [DEFAULT_HOSTS[cfg.backend]] if cfg.backend in DEFAULT_HOSTS else []
    extra = (getattr(cfg, "api_key_base_url", "") or "").strip()
    if extra:
        allowed.append(extra)
    if _origin(target) not in {_origin(a) for a in allowed}:
        return ""
    return os.environ.get(env, "").strip()


def build_llm(cfg: Optional[LLMConfig] = None, base_url: Optional[str] = None, **kwargs: Any) -> Optional[Any]:
    """Return a LlamaIndex chat LLM for ``cfg``, or None for the extractive backend.

    ``base_url`` (e.g. from ``--llm-base-url``) overrides ``cfg.api_base`` and selects the
    OpenAI-compatible client even when the backend is "extractive". Extra keyword arguments go to
    the LLM constructor (e.g. ``max_retries=0``, ``context_window=8192``).
    """
    cfg = cfg or LLMConfig()
    api_base = (base_url or cfg.api_base or "").strip()
    backend = cfg.backend
    if api_base and backend in ("extractive", "openai"):
        backend = "openai_like"
    if backend == "extractive":
        return None
    if backend == "openai":
        key = api_key_for(cfg.model_copy(update={"api_key_env": cfg.api_key_env or "OPENAI_API_KEY"}))
        if not key:
            raise ConfigError(
                f"{cfg.api_key_env or 'OPENAI_API_KEY'} is not set; use --llm-base-url for a local server "
                "or llm.backend: extractive"
            )
        try:
            from llama_index.llms.openai import OpenAI
        except ImportError as exc:  # pragma: no cover - depends on extras
            raise ModelUnavailableError(
                "llm.backend: openai needs llama-index-llms-openai (pip install 'mmrag_li[openai]')") from exc
        # The host the key is for, explicitly: not whatever $OPENAI_API_BASE / $OPENAI_BASE_URL say.
        params = dict(model=cfg.model, api_key=key, api_base=DEFAULT_HOSTS["openai"] + "/v1",
                      temperature=cfg.temperature, max_tokens=cfg.max_tokens, timeout=cfg.timeout_s)
        params.update(kwargs)
        return OpenAI(**params)
    if backend == "openai_like":
        if not api_base:
            raise ConfigError("llm.backend: openai_like needs llm.api_base (or --llm-base-url), "
                              "e.g. http://127.0.0.1:8000/v1")
        try:
            from llama_index.llms.openai_like import OpenAILike
        except ImportError as exc:  # pragma: no cover
            raise ModelUnavailableError(
                "an OpenAI-compatible server needs llama-index-llms-openai-like (pip install 'mmrag_li[openai]')"
            ) from exc
        key = api_key_for(cfg, api_base)  # never $OPENAI_API_KEY to a server it was not configured for
        params = dict(
            model=cfg.model,
            api_base=api_base,
            api_key=key or NO_KEY,
            is_chat_model=True,
            is_function_calling_model=False,
            context_window=DEFAULT_CONTEXT_WINDOW,
            temperature=cfg.temperature,
            max_tokens=cfg.max_tokens,
            timeout=cfg.timeout_s,
        )
        params.update(kwargs)
        return OpenAILike(**params)
    raise ConfigError(f"unknown llm.backend: {backend!r}")  # pragma: no cover - pydantic validates
