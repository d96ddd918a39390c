"""Test double at the network boundary: a local OpenAI-compatible chat-completions server; not a model.

`FakeOpenAIServer` runs ``http.server`` in a thread on 127.0.0.1 (ephemeral port) and speaks the
``POST /v1/chat/completions`` protocol, including SSE streaming when the request has
``"stream": true``. It records every request body (parsed JSON) and replies with scripted answers,
in order (the last one repeats). A reply may be a string, a callable ``request_json -> reply``, or
a dict ``{"content": str | None, "tool_calls": [{"name": ..., "arguments": {...}}]}`` for a
function-calling turn (sent as OpenAI ``tool_calls``, streamed as tool-call deltas).

    with FakeOpenAIServer(["The total is 1,939.00 [E1]."]) as srv:
        llm = OpenAILike(model="fake", api_base=srv.base_url, api_key="x", is_chat_model=True)
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

Reply = Union[str, Dict[str, Any], Callable[[Dict[str, Any]], Any]]


class FakeOpenAIServer:
    def __init__(self, replies: Sequence[Reply] = ("I don't know",), model: str = "fake-vlm",
                 chunk_chars: int = 4):
        self.replies: List[Reply] = list(replies)
        self.model = model
        self.chunk_chars = chunk_chars
        self.requests: List[Dict[str, Any]] = []
        self.paths: List[str] = []
        self.auth_headers: List[Optional[str]] = []  # the Authorization header of every POST (key-leak tests)
        self._lock = threading.Lock()
        self._server: Optional[ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "FakeOpenAIServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # /v1/models
                body = json.dumps({"object": "list", "data": [{"id": owner.model, "object": "model"}]}).encode()
                self._send(200, body, "application/json")

            def do_POST(self) -> None:
                with owner._lock:
                    owner.auth_headers.append(self.headers.get("Authorization"))
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    req = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send(400, b'{"error": {"message": "bad json"}}', "application/json")
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, b'{"error": {"message": "not found"}}', "application/json")
                    return
                text = owner._next_reply(self.path, req)
                if req.get("stream"):
                    self._stream(text)
                else:
                    body = json.dumps(owner._completion(text)).encode()
                    self._send(200, body, "application/json")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, text: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in owner._chunks(text):
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripted replies ---------------------------------------------------------------------
    def _next_reply(self, path: str, req: Dict[str, Any]) -> Any:
        with self._lock:
            self.requests.append(req)
            self.paths.append(path)
            idx = min(len(self.requests) - 1, len(self.replies) - 1)
            reply = self.replies[idx] if self.replies else ""
        reply = reply(req) if callable(reply) else reply
        return reply if isinstance(reply, dict) else str(reply)

    @staticmethod
    def _tool_calls(reply: Any) -> List[Dict[str, Any]]:
        if not isinstance(reply, dict):
            return []
        return [{"id": f"call_{i}", "type": "function",
                 "function": {"name": c["name"], "arguments": json.dumps(c.get("arguments", {}))}}
                for i, c in enumerate(reply.get("tool_calls") or [])]

    def _completion(self, reply: Any) -> Dict[str, Any]:
        content = reply.get("content") if isinstance(reply, dict) else reply
        message: Dict[str, Any] = {"role": "assistant", "content": content}
        calls = self._tool_calls(reply)
        if calls:
            message["tool_calls"] = calls
        return {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if calls else "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def _chunks(self, reply: Any) -> List[Dict[str, Any]]:
        text = (reply.get("content") if isinstance(reply, dict) else reply) or ""
        calls = self._tool_calls(reply)
        base = {"id": f"chatcmpl-fake-{len(self.requests)}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": self.model}
        out = [dict(base, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""},
                                    "finish_reason": None}])]
        step = max(1, self.chunk_chars)
        for i in range(0, len(text), step):
            out.append(dict(base, choices=[{"index": 0, "delta": {"content": text[i:i + step]},
                                            "finish_reason": None}]))
        for i, call in enumerate(calls):
            out.append(dict(base, choices=[{"index": 0, "finish_reason": None, "delta": {"tool_calls": [
                {"index": i, "id": call["id"], "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": call["function"]["arguments"]}}]}}]))
        out.append(dict(base, choices=[{"index": 0, "delta": {}, "finish_reason": "tool_calls" if calls else "stop"}]))
        return out

    # -- helpers for assertions ---------------------------------------------------------------
    def messages(self, i: int = -1) -> List[Dict[str, Any]]:
        return self.requests[i]["messages"]

    def system_text(self, i: int = -1) -> str:
        for m in self.messages(i):
            if m["role"] == "system":
                c = m["content"]
                return c if isinstance(c, str) else "".join(p.get("text", "") for p in c)
        return ""

    def user_parts(self, i: int = -1) -> List[Dict[str, Any]]:
        for m in self.messages(i):
            if m["role"] == "user":
                c = m["content"]
                return [{"type": "text", "text": c}] if isinstance(c, str) else list(c)
        return []

    def user_text(self, i: int = -1) -> str:
        return "\n".join(p.get("text", "") for p in self.user_parts(i) if p.get("type") == "text")
