"""A scripted stand-in for the Anthropic Messages API, for running the real Claude Code CLI.

Stdlib only. A local ThreadingHTTPServer on 127.0.0.1 (a free port) that
speaks enough of the Messages API for `claude -p` (2.1.x): the `HEAD /api/hello`
probe, `POST /v1/messages?beta=true` streamed as server-sent events (and the
non-streaming form the CLI falls back to after a failed stream),
`/v1/messages/count_tokens`; anything else is answered 404 and recorded in
`unknown`.

The script is a list of turns, consumed one per *main* request (a request that
offers the CLI's tools); side requests (no tools, e.g. a title or summary) are
answered with a short text and never consume the script. A turn is tool calls
(`tools(Write(...), Bash(...))`), a final text (`text("done")`) or an error
(`error(429, ...)`). When the script runs out, an error turn repeats (the
provider stays down) and anything else ends the conversation with a text.

Every request is recorded (`requests`), and every answer reports usage so the
CLI computes a cost.

    with FakeAnthropic([tools(Write("/tmp/x", "hi")), text("done")]) as api:
        env = api.env(config_dir=tmp_path / "claude")
        subprocess.run([claude, "-p", ...], env=env)
        assert api.main_requests[1].tool_results()[0]["is_error"] is False
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_ids = itertools.count(1)

# What the stand-in is not: the real service. Kept short, so a log says what happened.
EXHAUSTED_TEXT = "(fake_anthropic: script exhausted)"
SIDE_TEXT = "ok"

ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 502: "api_error", 503: "api_error", 504: "api_error",
    529: "overloaded_error",
}


# ---- turns -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """One tool_use block: the tool's name and its input."""

    name: str
    input: Mapping[str, Any]


@dataclass(frozen=True)
class Turn:
    """One scripted answer: tool calls, a final text, or an HTTP error."""

    calls: tuple[ToolCall, ...] = ()
    text: str = ""
    status: int | None = None                 # an error turn when set
    error_body: Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.status is not None


def Write(file_path: str, content: str) -> ToolCall:
    """Claude Code's Write tool (an absolute path)."""
    return ToolCall("Write", {"file_path": file_path, "content": content})


def Edit(file_path: str, old_string: str, new_string: str) -> ToolCall:
    """Claude Code's Edit tool (2.1.332 does not require a Read of the file first)."""
    return ToolCall("Edit", {"file_path": file_path, "old_string": old_string,
                             "new_string": new_string})


def Read(file_path: str) -> ToolCall:
    """Claude Code's Read tool."""
    return ToolCall("Read", {"file_path": file_path})


def Bash(command: str, description: str = "Run a command", **extra: Any) -> ToolCall:
    """Claude Code's Bash tool (extra: timeout, run_in_background)."""
    return ToolCall("Bash", {"command": command, "description": description, **extra})


def tools(*calls: ToolCall, text: str = "") -> Turn:
    """A turn that calls these tools (in one assistant message), after an optional text."""
    return Turn(calls=tuple(calls), text=text)


def text(message: str) -> Turn:
    """A turn that ends the conversation with this text (stop_reason end_turn)."""
    return Turn(text=message)


def error(status: int, message: str = "", kind: str | None = None,
          retry_after: float | None = None, headers: Mapping[str, str] | None = None) -> Turn:
    """A turn answered with HTTP `status` and an Anthropic error body."""
    kind = kind or ERROR_TYPES.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message or kind}}
    extra = dict(headers or {})
    if retry_after is not None:
        extra["retry-after"] = f"{retry_after:g}"
    return Turn(status=status, error_body=body, headers=extra)


# ---- recorded requests -------------------------------------------------------------------


@dataclass
class Request:
    """One request as received, and how it was classified."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any                   # parsed JSON, or the raw text, or None
    kind: str = "unknown"       # probe, main, side, count_tokens, unknown
    answer: str = ""            # what was sent back, e.g. "turn 1", "429", "side text"

    def tool_results(self) -> list[dict[str, Any]]:
        """The tool_result blocks of the last user message (what the CLI's tools returned)."""
        messages = self.body.get("messages", []) if isinstance(self.body, dict) else []
        users = [m for m in messages if m.get("role") == "user"]
        content = users[-1].get("content", []) if users else []
        if not isinstance(content, list):
            return []
        return [block for block in content if block.get("type") == "tool_result"]

    def tool_names(self) -> list[str]:
        """The names of the tools this request offers the model."""
        offered = self.body.get("tools", []) if isinstance(self.body, dict) else []
        return [t.get("name", "") for t in offered if isinstance(t, dict)]


def result_text(block: Mapping[str, Any]) -> str:
    """A tool_result block's content as one string (it may be a string or a list of blocks)."""
    content = block.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


# ---- the server --------------------------------------------------------------------------


class FakeAnthropic:
    """The server: a context manager (start/stop), its script, and what it received."""

    def __init__(self, script: Sequence[Turn] = (), model: str = "claude-sonnet-4-5",
                 input_tokens: int | None = None, output_tokens: int = 50,
                 delay_s: float = 0.0) -> None:
        self.script = list(script)
        self.model = model                      # echoed when the request names none
        self.input_tokens = input_tokens        # None: about a quarter of the body's length
        self.output_tokens = output_tokens
        self.delay_s = delay_s                  # before each main answer (to catch a run mid-way)
        self.requests: list[Request] = []
        self.tool_uses: list[tuple[str, ToolCall]] = []   # (tool_use id, call) as sent
        self.lock = threading.Lock()
        self.position = 0
        self._last: tuple[str, Turn, str] | None = None   # messages, turn, label
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> FakeAnthropic:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        handler = type("Handler", (_Handler,), {"api": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fake-anthropic")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, config_dir: Any, base: Mapping[str, str] | None = None,
            **extra: str) -> dict[str, str]:
        """An environment for `claude` that talks to this server and to nothing else."""
        return claude_env(self.url, config_dir, base=base, **extra)

    def load(self, script: Sequence[Turn]) -> None:
        """Start a new script (the next run's turns), from its first turn."""
        with self.lock:
            self.script = list(script)
            self.position = 0
            self._last = None

    # -- what was received
    @property
    def main_requests(self) -> list[Request]:
        return [r for r in self.requests if r.kind == "main"]

    @property
    def unknown(self) -> list[Request]:
        return [r for r in self.requests if r.kind == "unknown"]

    def all_tool_results(self) -> list[dict[str, Any]]:
        """Every tool_result the CLI sent back, once each, in the order it sent them
        (tools called in one turn may run at once: their results come as they finish)."""
        seen: dict[str, dict[str, Any]] = {}
        for request in self.main_requests:
            for block in request.tool_results():
                seen.setdefault(str(block.get("tool_use_id")), block)
        return list(seen.values())

    def outputs(self) -> list[tuple[ToolCall, dict[str, Any] | None]]:
        """Each scripted tool call that was sent, in script order, with its tool_result
        (None when the CLI never answered it)."""
        results = {str(block.get("tool_use_id")): block for block in self.all_tool_results()}
        return [(call, results.get(use_id)) for use_id, call in self.tool_uses]

    def output_texts(self) -> list[str]:
        """The text of each scripted tool call's result, in script order ("" if none)."""
        return [result_text(block) if block else "" for _, block in self.outputs()]

    # -- answering
    def next_turn(self, body: Any) -> tuple[Turn, str]:
        """The turn for a main request, and a label for the record.

        The same conversation asked again after a successful answer (the CLI's
        non-streaming retry of a stream it could not read) gets that answer again;
        after an error answer the next turn is due, so `[error(429), text("ok")]`
        is a rate limit that a retry gets past.
        """
        key = json.dumps(body.get("messages") if isinstance(body, dict) else body,
                         sort_keys=True)
        with self.lock:
            last = self._last
            if last is not None and last[0] == key and not last[1].is_error:
                return last[1], f"{last[2]} (again)"
            turn, label = self._advance()
            self._last = (key, turn, label)
            return turn, label

    def _advance(self) -> tuple[Turn, str]:
        if self.position < len(self.script):
            self.position += 1
            return self.script[self.position - 1], f"turn {self.position}"
        last = self.script[-1] if self.script else None
        if last is not None and last.is_error:
            return last, f"turn {len(self.script)} (repeated)"
        return Turn(text=EXHAUSTED_TEXT), "exhausted"

    def usage(self, body: Any) -> dict[str, int]:
        """The usage to report: fixed, or estimated from the request's size."""
        size = len(json.dumps(body)) if body is not None else 0
        tokens = self.input_tokens if self.input_tokens is not None else max(1, size // 4)
        return {"input_tokens": tokens, "output_tokens": self.output_tokens,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def claude_env(url: str, config_dir: Any, base: Mapping[str, str] | None = None,
               **extra: str) -> dict[str, str]:
    """The variables that point claude at `url` with a dummy key, in an isolated config dir,
    with auto-update, telemetry, other traffic and its own retries off."""
    env = dict(base if base is not None else {})
    env.update({
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "sk-ant-fake-0000",
        "CLAUDE_CONFIG_DIR": str(config_dir),
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    })
    env.update(extra)
    return env


def classify(method: str, path: str, body: Any) -> str:
    """probe, main, side, count_tokens or unknown."""
    route = urlsplit(path).path.rstrip("/")
    if method in ("HEAD", "GET") and route in ("", "/api/hello"):
        return "probe"
    if method == "POST" and route == "/v1/messages/count_tokens":
        return "count_tokens"
    if method == "POST" and route == "/v1/messages" and isinstance(body, dict):
        return "main" if body.get("tools") else "side"
    return "unknown"


class _Handler(BaseHTTPRequestHandler):
    """Records each request, then answers it as its kind says."""

    api: FakeAnthropic
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the record is self.api.requests

    def do_HEAD(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self._read_body()
        request = Request(self.command, self.path, dict(self.headers.items()), body)
        request.kind = classify(self.command, self.path, body)
        with self.api.lock:
            self.api.requests.append(request)
        try:
            request.answer = self._answer(request)
        except (BrokenPipeError, ConnectionResetError):
            request.answer += " (client went away)"

    def _read_body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode("utf-8", errors="replace")

    def _answer(self, request: Request) -> str:
        if request.kind == "probe":
            self._send(200, b"", "text/plain")
            return "probe"
        if request.kind == "count_tokens":
            self._send_json(200, {"input_tokens": self.api.usage(request.body)["input_tokens"]})
            return "count_tokens"
        if request.kind == "unknown":
            self._send_json(404, {"type": "error", "error": {
                "type": "not_found_error", "message": f"fake_anthropic: no {request.path}"}})
            return "404 unknown"
        if request.kind == "side":
            self._reply(request.body, Turn(text=SIDE_TEXT))
            return "side text"
        turn, label = self.api.next_turn(request.body)
        if self.api.delay_s:
            threading.Event().wait(self.api.delay_s)
        if turn.is_error:
            self._send_error(turn)
            return f"{label}: {turn.status}"
        self._reply(request.body, turn)
        return label

    def _send_error(self, turn: Turn) -> None:
        assert turn.status is not None
        data = json.dumps(turn.error_body).encode()
        headers = {"request-id": f"req_fake{next(_ids):06d}", **turn.headers}
        self._send(turn.status, data, "application/json", headers)

    def _reply(self, body: Any, turn: Turn) -> None:
        message = _message(self.api, body, turn)
        if isinstance(body, dict) and body.get("stream"):
            self._stream(message)
        else:
            self._send_json(200, message)

    def _stream(self, message: dict[str, Any]) -> None:
        """The message as Messages API server-sent events."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", f"req_fake{next(_ids):06d}")
        self.send_header("connection", "close")
        self.end_headers()
        for event in stream_events(message):
            payload = json.dumps(event, separators=(",", ":"))
            self.wfile.write(f"event: {event['type']}\ndata: {payload}\n\n".encode())
        self.wfile.flush()
        self.close_connection = True

    def _send_json(self, status: int, value: Any) -> None:
        self._send(status, json.dumps(value).encode(), "application/json",
                   {"request-id": f"req_fake{next(_ids):06d}"})

    def _send(self, status: int, data: bytes, content_type: str,
              headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _message(api: FakeAnthropic, body: Any, turn: Turn) -> dict[str, Any]:
    """The whole assistant message a turn stands for (the non-streaming answer)."""
    content: list[dict[str, Any]] = []
    if turn.text:
        content.append({"type": "text", "text": turn.text})
    for call in turn.calls:
        use_id = f"toolu_fake{next(_ids):06d}"
        content.append({"type": "tool_use", "id": use_id, "name": call.name,
                        "input": dict(call.input)})
        with api.lock:
            api.tool_uses.append((use_id, call))
    model = body.get("model") if isinstance(body, dict) else None
    return {
        "id": f"msg_fake{next(_ids):06d}", "type": "message", "role": "assistant",
        "model": model or api.model, "content": content,
        "stop_reason": "tool_use" if turn.calls else "end_turn", "stop_sequence": None,
        "usage": api.usage(body),
    }


def stream_events(message: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """message_start, each block's start/delta/stop, message_delta (usage), message_stop."""
    usage = dict(message["usage"])
    start = {**message, "content": [], "stop_reason": None,
             "usage": {**usage, "output_tokens": 1}}
    yield {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield {"type": "content_block_start", "index": index,
                   "content_block": {"type": "text", "text": ""}}
            yield {"type": "content_block_delta", "index": index,
                   "delta": {"type": "text_delta", "text": block["text"]}}
        else:
            yield {"type": "content_block_start", "index": index,
                   "content_block": {**block, "input": {}}}
            yield {"type": "content_block_delta", "index": index,
                   "delta": {"type": "input_json_delta",
                             "partial_json": json.dumps(block["input"])}}
        yield {"type": "content_block_stop", "index": index}
    yield {"type": "message_delta",
           "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
           "usage": {"output_tokens": usage["output_tokens"]}}
    yield {"type": "message_stop"}
