"""Capture real Claude Code outputs into tests/data/agent_outputs/claude/<case>/.

    python tests/realcli/capture_claude_corpus.py [CASE ...]

Each case runs the installed CLI (tests/realcli/install.sh) against the
scripted stand-in API (tests/support/fake_anthropic.py) in a fresh tmp layout
and writes stdout.txt, stderr.txt, exit_code, and meta.json (argv, the
script, seconds taken, the requests the stand-in received). The signal cases
also write processes.txt: which processes carrying the run's marker variable
were alive before the signal and after claude exited.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from support.claude_cli import Layout, base_env  # noqa: E402
from support.fake_anthropic import (  # noqa: E402
    Bash,
    FakeAnthropic,
    Turn,
    Write,
    claude_env,
    error,
    text,
    tools,
)

CORPUS = HERE.parent / "data" / "agent_outputs" / "claude"
MARKER = "ORCH_RUN_ID"

# Messages as the real API words them, so the CLI's rendering of them is what we keep.
REAL_MESSAGES = {
    429: "This request would exceed the rate limit for your organization of 50 requests "
         "per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits.",
    529: "Overloaded",
    500: "Internal server error",
    503: "Service unavailable",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
}


def save(case: str, argv: list[str], script: list[Turn], done: dict[str, Any],
         api: FakeAnthropic | None, extra: dict[str, Any] | None = None) -> None:
    """Write one case's files."""
    folder = CORPUS / case
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stdout.txt").write_text(done["stdout"], encoding="utf-8")
    (folder / "stderr.txt").write_text(done["stderr"], encoding="utf-8")
    (folder / "exit_code").write_text(f"{done['returncode']}\n", encoding="utf-8")
    requests = [{"method": r.method, "path": r.path, "kind": r.kind, "answer": r.answer,
                 "stream": r.body.get("stream") if isinstance(r.body, dict) else None}
                for r in (api.requests if api else [])]
    meta = {"argv": argv, "script": [asdict(turn) for turn in script],
            "seconds": round(done["seconds"], 2), "requests": requests, **(extra or {})}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"{case}: exit {done['returncode']} in {done['seconds']:.1f}s")


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> dict[str, Any]:
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    return {"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
            "seconds": time.monotonic() - started}


def scripted(case: str, role: str, make: Callable[[Layout], list[Turn]],
             delay_s: float = 0.0, options: tuple[str, ...] = (), **env_extra: str) -> None:
    """Run `role`'s preset (with `options` before its prompt) against a script and save
    what came out."""
    with tempfile.TemporaryDirectory(prefix=f"claude-{case}-") as tmp:
        layout = Layout.make(Path(tmp))
        script = make(layout)
        with FakeAnthropic(script, delay_s=delay_s) as api:
            env = api.env(layout.config, base=base_env(Path(tmp) / "home"), **env_extra)
            argv = layout.argv(role)
            argv[-2:-2] = options
            done = run(argv, layout.worktree, env)
        save(case, argv, script, done, api, {"role": role, "tmp": tmp})


def unreachable(case: str, url: str | None = None) -> None:
    """The provider's port is closed (nothing listens), or `url` (a name that does not
    resolve)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix=f"claude-{case}-") as tmp:
        layout = Layout.make(Path(tmp))
        env = claude_env(url or f"http://127.0.0.1:{port}", layout.config,
                         base=base_env(Path(tmp) / "home"))
        argv = layout.argv("analyst")
        done = run(argv, layout.worktree, env)
        save(case, argv, [], done, None, {"role": "analyst", "base_url": env["ANTHROPIC_BASE_URL"]})


def analyst_writes(layout: Layout) -> list[Turn]:
    return [tools(Write(str(layout.artifacts / "02-analysis.md"), "# Analysis\n")),
            text("Wrote the analysis.")]


def developer_works(layout: Layout) -> list[Turn]:
    wt = layout.worktree
    return [tools(Write(str(wt / "calc.py"), "def add(a, b):\n    return a + b\n")),
            tools(Bash("python3 -m pytest -q")),
            tools(Bash('git add calc.py && git commit -q -m "Fix add"')),
            tools(Write(str(layout.artifacts / "10-dev-report.md"), "# Development report\n")),
            text("Fixed add; 1 test passes.")]


def denied_but_done(layout: Layout) -> list[Turn]:
    return [tools(Bash("curl -s https://example.com/")),
            tools(Write(str(layout.artifacts / "02-analysis.md"), "# Analysis\n")),
            text("Wrote the analysis without the page.")]


def does_nothing(layout: Layout) -> list[Turn]:
    return [text("I have looked at the task and will leave it for now.")]


def http_error(status: int) -> Callable[[Layout], list[Turn]]:
    return lambda layout: [error(status, REAL_MESSAGES[status])]


# ---- signals -----------------------------------------------------------------------------


def marked_processes(value: str) -> list[dict[str, Any]]:
    """Every live process whose environment holds MARKER=value, with its ids."""
    found = []
    needle = f"{MARKER}={value}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if needle not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        found.append({"pid": int(entry), "state": fields[0], "ppid": int(fields[1]),
                      "pgid": int(fields[2]), "sid": int(fields[3]),
                      "cmd": cmd.decode(errors="replace").strip()[-100:]})
    return sorted(found, key=lambda item: item["pid"])


def wait_for_command(value: str, command: str, limit: float = 120) -> list[dict[str, Any]]:
    """The marked processes once one of them runs `command` (then a second more)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if any(p["cmd"] == command for p in marked_processes(value)):
            time.sleep(1.0)
            return marked_processes(value)
        time.sleep(0.2)
    raise TimeoutError(f"no process ran {command!r}")


BLOCKER = "tail -f /dev/null"   # Claude Code refuses a plain long `sleep` in a Bash tool


def signalled(case: str, script: list[Turn], signum: int | None) -> None:
    """claude runs the script's Bash tools; once BLOCKER runs we signal claude (None: we
    let it end by itself) and see which processes carrying the run's marker survive."""
    with tempfile.TemporaryDirectory(prefix=f"claude-{case}-") as tmp:
        layout = Layout.make(Path(tmp))
        with FakeAnthropic(script) as api:
            env = api.env(layout.config, base=base_env(Path(tmp) / "home"), **{MARKER: case})
            argv = [layout.argv("analyst")[0], "-p", "--output-format", "json",
                    "--allowedTools=Bash", "--", "Run it."]
            started = time.monotonic()
            proc = subprocess.Popen(argv, cwd=layout.worktree, env=env, text=True,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
            before = wait_for_command(case, BLOCKER) if signum else []
            if signum:
                proc.send_signal(signum)
            stdout, stderr = proc.communicate(timeout=60)
            done = {"returncode": proc.returncode, "stdout": stdout, "stderr": stderr,
                    "seconds": time.monotonic() - started}
            time.sleep(3)
            after = marked_processes(case)
        for item in after:
            try:
                os.kill(item["pid"], signal.SIGKILL)
            except OSError:
                pass
        listing = {"claude_pid": proc.pid, "signal": signal.Signals(signum).name if signum
                   else None, "before": before, "after_exit_plus_3s": after}
        save(case, argv, script, done, api, {"processes": listing})


def blocker_script(*first: str) -> list[Turn]:
    """Bash tools that run `first` (each its own turn), then one that blocks."""
    return [*(tools(Bash(command)) for command in first), tools(Bash(BLOCKER)), text("done")]


CASES: dict[str, Callable[[], None]] = {
    "success-write": lambda: scripted("success-write", "analyst", analyst_writes),
    "success-bash": lambda: scripted("success-bash", "developer", developer_works,
                                     PYTHONDONTWRITEBYTECODE="1"),
    "denial-nonblocking": lambda: scripted("denial-nonblocking", "analyst", denied_but_done),
    "does-nothing": lambda: scripted("does-nothing", "analyst", does_nothing),
    **{f"http-{status}": functools.partial(scripted, f"http-{status}", "analyst",
                                           http_error(status)) for status in REAL_MESSAGES},
    "unreachable": lambda: unreachable("unreachable"),
    "dns-failure": lambda: unreachable("dns-failure", "http://api.orch-test.invalid"),
    "request-timeout": lambda: scripted("request-timeout", "analyst", analyst_writes,
                                        delay_s=8, API_TIMEOUT_MS="2000"),
    "http-429-retried": lambda: scripted(
        "http-429-retried", "analyst",
        lambda layout: [error(429, REAL_MESSAGES[429], retry_after=1)],
        CLAUDE_CODE_MAX_RETRIES="2"),
    "budget-exceeded": lambda: scripted("budget-exceeded", "developer", developer_works,
                                        options=("--max-budget-usd", "0.01"),
                                        PYTHONDONTWRITEBYTECODE="1"),
    "sigterm-tool": lambda: signalled("sigterm-tool", blocker_script(), signal.SIGTERM),
    "sigkill-tool": lambda: signalled("sigkill-tool", blocker_script(), signal.SIGKILL),
    "sigterm-setsid": lambda: signalled(
        "sigterm-setsid", [tools(Bash(f"setsid sleep 999 & {BLOCKER}")), text("done")],
        signal.SIGTERM),
    "sigkill-setsid": lambda: signalled(
        "sigkill-setsid", [tools(Bash(f"setsid sleep 999 & {BLOCKER}")), text("done")],
        signal.SIGKILL),
    "sigterm-after-detached": lambda: signalled(
        "sigterm-after-detached", blocker_script("setsid sleep 999 &"), signal.SIGTERM),
    "exit-leaves-detached": lambda: signalled(
        "exit-leaves-detached",
        [tools(Bash("setsid sleep 999 &")), tools(Bash("nohup sleep 998 >/dev/null 2>&1 &")),
         text("done")], None),
    "background-task-waits": lambda: scripted(
        "background-task-waits", "developer", lambda layout: [
            tools(Bash('python3 -c "import time; time.sleep(4)"; echo finished',
                       run_in_background=True)),
            text("Started it."), text("It finished.")]),
    "blocked-sleep": lambda: scripted(
        "blocked-sleep", "developer", lambda layout: [tools(Bash("sleep 999")), text("done")]),
}


def main(names: list[str]) -> None:
    for name in names or list(CASES):
        CASES[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
