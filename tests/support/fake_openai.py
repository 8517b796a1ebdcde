"""A scripted stand-in for the OpenAI Responses API, for running the real Codex CLI offline.

`codex exec` (0.171) sends each model request as `POST {base}/responses` with
`stream: true` and reads server-sent events. This server answers each agent-turn
request with the next step of a script: tool calls, a final text, an HTTP error,
or a stream cut short. Codex 0.171 shows the model one code-mode tool, `exec`
(a custom tool whose input is JavaScript that calls `tools.exec_command(...)`,
`tools.apply_patch(...)`, ...): `shell()` and `apply_patch()` build such calls.

Requests that are not agent turns (the websocket upgrade, which is refused with
426 so that Codex falls back to HTTP at once; a request whose
`x-codex-turn-metadata` names another `request_kind`; `GET /models`; anything
unknown) are answered without consuming the script. Every request is recorded
on `FakeOpenAI.requests`, so tests can assert on what the CLI sent.

Stdlib only, so that tests import it with no extra dependency.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USAGE = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 200},
         "output_tokens": 34, "output_tokens_details": {"reasoning_tokens": 0},
         "total_tokens": 1234}


@dataclass
class Text:
    """A final assistant message: with no tool call beside it, the turn ends."""

    text: str


@dataclass
class Exec:
    """One call of Codex's code-mode `exec` tool; `source` is the JavaScript it runs."""

    source: str


@dataclass
class Call:
    """A plain function call of a top-level tool (such as `wait`), arguments as a dict."""

    name: str
    arguments: dict[str, Any]


@dataclass
class Error:
    """An HTTP error answer, with the OpenAI error body built from message and code.

    `times` None makes the error sticky: every later turn request, retries
    included, fails the same way (the provider stays down). `raw_body` replaces
    the JSON body verbatim.
    """

    status: int
    message: str = "error"
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None
    raw_body: str | None = None

    def body(self) -> bytes:
        """The bytes of the error body."""
        if self.raw_body is not None:
            return self.raw_body.encode()
        error = {"message": self.message, "type": self.code or "server_error",
                 "param": None, "code": self.code}
        return json.dumps({"error": error}).encode()


@dataclass
class Disconnect:
    """A stream that starts (`response.created`) and is then cut without completing."""


Item = Text | Exec | Call
Step = Item | Error | Disconnect | list[Item]


def shell(cmd: str, workdir: str | None = None, yield_time_ms: int = 30000) -> Exec:
    """An `exec` call that runs one shell command through `tools.exec_command`.

    The JavaScript hands the command's result back to the model with `text(...)`,
    as a real model's code does, so the next request carries it.
    """
    args: dict[str, Any] = {"cmd": cmd, "yield_time_ms": yield_time_ms}
    if workdir:
        args["workdir"] = workdir
    return Exec(f"const r = await tools.exec_command({json.dumps(args)});\n"
                "text(JSON.stringify(r));\n")


def apply_patch(patch: str) -> Exec:
    """An `exec` call that edits files with Codex's `apply_patch` tool (patch text)."""
    return Exec(f"const r = await tools.apply_patch({json.dumps(patch)});\n"
                "text(JSON.stringify(r));\n")


def add_file_patch(path: str, text: str) -> str:
    """The apply_patch text that creates the file `path` (absolute) holding `text`."""
    lines = "".join(f"+{line}\n" for line in text.splitlines())
    return f"*** Begin Patch\n*** Add File: {path}\n{lines}*** End Patch\n"


class _Script:
    """The scripted answers, consumed one per agent-turn request, thread-safe."""

    def __init__(self, steps: list[Step], after: Step) -> None:
        self._steps = list(steps)
        self._after = after
        self._lock = threading.Lock()

    def next(self) -> Step:
        """The step for this request: sticky errors repeat, a spent script gives `after`."""
        with self._lock:
            if not self._steps:
                return self._after
            step = self._steps[0]
            if not isinstance(step, Error) or step.times is not None:
                self._consume(step)
            return step

    def _consume(self, step: Step) -> None:
        if isinstance(step, Error) and step.times is not None and step.times > 1:
            step.times -= 1
            return
        self._steps.pop(0)

    def load(self, steps: list[Step]) -> None:
        """Replace what is left of the script with `steps` (the next run's)."""
        with self._lock:
            self._steps = list(steps)

    def remaining(self) -> int:
        """How many steps are left (a sticky error counts as one)."""
        with self._lock:
            return len(self._steps)


class FakeOpenAI:
    """The server as a context manager: `with FakeOpenAI([shell("ls"), Text("ok")]) as api:`.

    `api.base_url` is what Codex's provider `base_url` (or `openai_base_url`)
    must name. `after` answers turn requests once the script is spent.
    """

    def __init__(self, steps: list[Step], after: Step | None = None,
                 websocket_status: int = 426, usage: dict[str, Any] | None = None) -> None:
        self.script = _Script(steps, after if after is not None else Text("Done."))
        self.websocket_status = websocket_status
        self.usage = usage if usage is not None else USAGE
        self.requests: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True

    @property
    def port(self) -> int:
        """The port the server listens on (chosen by the kernel)."""
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The base URL to configure: `http://127.0.0.1:PORT/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> FakeOpenAI:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def load(self, steps: list[Step]) -> None:
        """Script the next run: `steps` replace whatever is left of the script."""
        self.script.load(steps)

    def new_id(self, prefix: str) -> str:
        """A fresh id such as `call_3`."""
        return f"{prefix}_{next(self._ids)}"

    def record(self, entry: dict[str, Any]) -> None:
        """Keep one request's record."""
        with self._lock:
            self.requests.append(entry)

    def turn_requests(self) -> list[dict[str, Any]]:
        """The recorded agent-turn requests, in order."""
        with self._lock:
            return [r for r in self.requests if r["kind"] == "turn"]

    def tool_outputs(self) -> list[str]:
        """The text of every tool output Codex sent back, in order (last request's view)."""
        turns = self.turn_requests()
        if not turns:
            return []
        return [_output_text(item) for item in turns[-1]["body"].get("input", [])
                if isinstance(item, dict) and item.get("type", "").endswith("_call_output")]


def _output_text(item: dict[str, Any]) -> str:
    """The text of one `*_call_output` input item (string or list of text parts)."""
    output = item.get("output")
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(part.get("text", "") for part in output if isinstance(part, dict))
    return json.dumps(output)


def request_kind(headers: dict[str, str]) -> str | None:
    """The `request_kind` Codex names in `x-codex-turn-metadata` ("turn", "prewarm", ...)."""
    for name, value in headers.items():
        if name.lower() == "x-codex-turn-metadata":
            try:
                kind = json.loads(value).get("request_kind")
            except (ValueError, AttributeError):
                return None
            return kind if isinstance(kind, str) else None
    return None


def _handler_for(api: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to one FakeOpenAI instance."""
    return type("Handler", (_Handler,), {"server_api": api})


class _Handler(BaseHTTPRequestHandler):
    """Routes requests: agent turns get a script step, the rest a neutral answer."""

    protocol_version = "HTTP/1.1"
    server_api: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the requests are recorded on the server object instead."""

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode(errors="replace")

    def _record(self, kind: str, body: Any) -> dict[str, Any]:
        entry = {"method": self.command, "path": self.path, "kind": kind,
                 "headers": dict(self.headers.items()), "body": body}
        self.server_api.record(entry)
        return entry

    def do_GET(self) -> None:
        """Refuse the websocket upgrade (426: instant HTTP fallback); list models."""
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._record("websocket", None)
            self._send_json(self.server_api.websocket_status,
                            {"error": {"message": "websockets are not supported here"}})
        elif self.path.split("?")[0].rstrip("/").endswith("/models"):
            self._record("models", None)
            self._send_json(200, {"object": "list", "data": [
                {"id": "gpt-test", "object": "model", "owned_by": "fake-openai"}]})
        else:
            self._record("unknown", None)
            self._send_json(404, {"error": {"message": f"not found: {self.path}"}})

    def do_HEAD(self) -> None:
        """A connectivity probe: 200, no body."""
        self._record("probe", None)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        """POST /responses: an agent turn takes the next script step; the rest, no step."""
        body = self._body()
        if not (self.path.split("?")[0].rstrip("/").endswith("/responses")
                and isinstance(body, dict)):
            self._record("unknown", body)
            self._send_json(404, {"error": {"message": f"not found: {self.path}"}})
            return
        kind = request_kind(dict(self.headers.items()))
        if not body.get("stream") or kind not in (None, "turn"):
            self._record("side", body)
            self._stream([Text("")])
            return
        entry = self._record("turn", body)
        step = self.server_api.script.next()
        entry["step"] = repr(step)
        self._answer(step)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None,
                   raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, step: Step) -> None:
        if isinstance(step, Error):
            self._send_json(step.status, None, step.headers, step.body())
        elif isinstance(step, Disconnect):
            self._stream([], complete=False)
        else:
            self._stream(step if isinstance(step, list) else [step])

    def _stream(self, items: list[Item], complete: bool = True) -> None:
        """Send one streamed response: created, each output item, completed."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        api = self.server_api
        response = {"id": api.new_id("resp"), "object": "response", "status": "in_progress",
                    "model": "gpt-test", "output": []}
        self._event("response.created", {"response": response})
        for index, item in enumerate(items):
            for name, payload in _item_events(api, item, index):
                self._event(name, payload)
        if complete:
            done = dict(response, status="completed", usage=api.usage)
            self._event("response.completed", {"response": done})

    def _event(self, name: str, payload: dict[str, Any]) -> None:
        data = json.dumps({"type": name, **payload})
        self.wfile.write(f"event: {name}\ndata: {data}\n\n".encode())
        self.wfile.flush()


def _item_events(api: FakeOpenAI, item: Item, index: int) -> list[tuple[str, dict[str, Any]]]:
    """The server-sent events that stream one output item."""
    if isinstance(item, Text):
        item_id = api.new_id("msg")
        done = {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": item.text, "annotations": []}]}
        delta = {"item_id": item_id, "output_index": index, "content_index": 0,
                 "delta": item.text}
        return [("response.output_item.added",
                 {"output_index": index, "item": dict(done, status="in_progress", content=[])}),
                ("response.output_text.delta", delta),
                ("response.output_item.done", {"output_index": index, "item": done})]
    if isinstance(item, Exec):
        done = {"type": "custom_tool_call", "id": api.new_id("ctc"), "status": "completed",
                "call_id": api.new_id("call"), "name": "exec", "input": item.source}
    else:
        done = {"type": "function_call", "id": api.new_id("fc"), "status": "completed",
                "call_id": api.new_id("call"), "name": item.name,
                "arguments": json.dumps(item.arguments)}
    return [("response.output_item.added", {"output_index": index, "item": done}),
            ("response.output_item.done", {"output_index": index, "item": done})]
