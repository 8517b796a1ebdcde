"""Capture real outputs of the Codex CLI against the scripted stand-in provider.

Usage: python tests/realcli/capture_codex_corpus.py [CASE ...]   (default: every case)

Each case runs the pinned real `codex exec` (install: npm ci --prefix tests/realcli)
in a fresh task layout under a temporary directory and writes what it printed to
tests/data/agent_outputs/codex/<case>/: stdout.jsonl, stderr.txt and meta.json
(argv, exit code, duration, the config.toml used, the script, the requests seen).
The signal cases also write processes.json: the run's processes before and after
the signal, found by a marker variable in their environment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from support.codex_env import (
    PRESETS,
    ROOT,
    Run,
    Task,
    codex_bin,
    codex_env,
    make_task,
    render,
    run_codex,
    write_codex_home,
)
from support.fake_openai import Error, FakeOpenAI, Step, Text, add_file_patch, apply_patch, shell

OUT = ROOT / "tests" / "data" / "agent_outputs" / "codex"
PLAIN = ["codex", "exec", "--json", "-s", "workspace-write", "{prompt}"]
HIGH_DEMAND = "We're currently experiencing high demand, which may cause temporary errors."


def analysis_steps(task: Task) -> list[Step]:
    """The analyst writes its deliverable with apply_patch, then says so."""
    patch = add_file_patch(f"{task.artifacts}/02-analysis.md", "# Analysis\n\nAll clear.")
    return [apply_patch(patch), Text("Wrote 02-analysis.md.")]


def developer_steps(task: Task) -> list[Step]:
    """The developer edits, runs the tests, commits and writes its report."""
    return [shell("printf 'def add(a, b):\\n    return a + b\\n' > calc.py"),
            shell("python3 -m pytest -q 2>&1 | tail -3"),
            shell("git add -A && git commit -q -m 'Add calc.add' && git log --oneline -1"),
            shell(f"printf '# Dev report\\n\\nAdded calc.add.\\n' "
                  f"> {task.artifacts}/10-dev-report.md"),
            Text("Committed.")]


CASES: dict[str, dict[str, Any]] = {
    "success_file_write": {"role": "analyst", "steps": analysis_steps},
    "success_commit": {"role": "developer", "steps": developer_steps},
    "model_does_nothing": {"role": "developer",
                           "steps": lambda t: [Text("I have implemented the change.")]},
    "commit_denied_plain_sandbox": {"argv": PLAIN, "steps": developer_steps},
    "patch_denied_outside_workspace": {"argv": PLAIN, "steps": analysis_steps},
    "http_429_rate_limit": {"steps": lambda t: [
        Error(429, "Rate limit reached for gpt-test.", "rate_limit_exceeded")]},
    "http_429_quota": {"steps": lambda t: [
        Error(429, "You exceeded your current quota.", "insufficient_quota")]},
    "http_500_high_demand": {"steps": lambda t: [Error(500, HIGH_DEMAND)]},
    "http_500_high_demand_default_retries": {"retries": None,
                                             "steps": lambda t: [Error(500, HIGH_DEMAND)]},
    "http_503_at_capacity": {"steps": lambda t: [
        Error(503, "Selected model is at capacity.", "server_is_overloaded")]},
    "http_401_invalid_key": {"retries": None, "steps": lambda t: [
        Error(401, "Incorrect API key provided: sk-dummy.", "invalid_api_key")]},
    "provider_unreachable": {"closed_port": True, "retries": None},
    "provider_unreachable_unbounded_default": {"closed_port": True, "retries": None,
                                               "argv": PLAIN, "timeout": 20},
}


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def argv_for(case: dict[str, Any], task: Task) -> list[str]:
    """The case's argv: its own template or the preset of its role, rendered."""
    template = case.get("argv") or PRESETS[case.get("role", "developer")]
    return render(template, task.values("Do the task described in the brief."))


def capture(name: str, case: dict[str, Any], tmp: Path) -> None:
    """Run one case and write its outputs."""
    task = make_task(tmp, {"README.md": "demo\n", "test_calc.py": "def test_ok():\n    pass\n"})
    steps = case["steps"](task) if "steps" in case else []
    with FakeOpenAI(steps) as api:
        url = f"http://127.0.0.1:{free_port()}/v1" if case.get("closed_port") else api.base_url
        home = write_codex_home(tmp / "codex-home", url, retries=case.get("retries", 0))
        run = run_codex(argv_for(case, task), task.worktree, codex_env(home),
                        timeout=case.get("timeout", 120))
        requests = [{"kind": r["kind"], "path": r["path"], "step": r.get("step")}
                    for r in api.requests]
        requests.append({"tool_outputs_seen_by_model": api.tool_outputs()})
    write_case(name, run, home, steps, requests, task)


def write_case(name: str, run: Run, home: Path, steps: list[Step],
               requests: list[dict[str, Any]], task: Task) -> None:
    """Write stdout, stderr and meta.json of one captured case."""
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stdout.jsonl").write_text(run.stdout)
    (folder / "stderr.txt").write_text(run.stderr)
    meta = {"argv": run.argv, "exit_code": run.exit_code, "duration_s": run.duration_s,
            "timed_out_and_sigtermed": run.timed_out, "codex_version": "0.171.0",
            "config_toml": (home / "config.toml").read_text(),
            "script": [repr(s) for s in steps], "requests": requests,
            "deliverables": sorted(p.name for p in task.artifacts.iterdir()),
            "commits_on_task_branch": task.commits()}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{name}: exit {run.exit_code} in {run.duration_s}s", flush=True)


def run_processes(marker: str) -> list[dict[str, Any]]:
    """Every process whose environment carries the marker, with its ids and argv."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if marker.encode() not in Path(f"/proc/{entry}/environ").read_bytes():
                continue
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        found.append({"pid": int(entry), "ppid": int(fields[1]), "pgid": int(fields[2]),
                      "sid": int(fields[3]), "argv": argv.strip()[:120]})
    return sorted(found, key=lambda p: p["pid"])


def signal_case(name: str, sandbox: str, sig: signal.Signals, target: str, tmp: Path) -> None:
    """Signal codex while its tool runs `setsid sleep 999 & sleep 998`; see what survives.

    `target` "group" signals codex's process group (what orch's supervisor does);
    "wrapper" signals only the node launcher's pid.
    """
    task = make_task(tmp)
    marker = f"orch-capture-{os.getpid()}-{name}"
    with FakeOpenAI([shell("setsid sleep 999 & sleep 998"), Text("done")]) as api:
        home = write_codex_home(tmp / "codex-home", api.base_url)
        argv = render(["codex", "exec", "--json", "-s", sandbox, "{prompt}"],
                      task.values("Start the sleepers."))
        env = codex_env(home, ORCH_RUN_ID=marker)
        proc = subprocess.Popen(argv, cwd=task.worktree, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        before = wait_for_sleepers(marker)
        (os.killpg if target == "group" else os.kill)(proc.pid, sig)
        started = time.monotonic()
        proc.wait(timeout=30)
        exited_after = round(time.monotonic() - started, 2)
        time.sleep(2)
        after = run_processes(marker)
        for leftover in after:
            try:
                os.kill(leftover["pid"], signal.SIGKILL)
            except ProcessLookupError:  # died with its parent meanwhile
                pass
        out, err = proc.communicate(timeout=30)
    result = {"argv": argv, "signal": sig.name, "target": target, "leader": proc.pid,
              "exit_code": proc.returncode, "exited_after_s": exited_after,
              "marker_variable": "ORCH_RUN_ID", "before": before, "survivors": after}
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stdout.jsonl").write_text(out)
    (folder / "stderr.txt").write_text(err)
    (folder / "processes.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{name}: exit {proc.returncode}, {len(after)} survivors", flush=True)


def wait_for_sleepers(marker: str) -> list[dict[str, Any]]:
    """The run's processes once both sleeps are running (at most 60 s)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        procs = run_processes(marker)
        if sum(p["argv"].startswith("sleep 99") for p in procs) >= 2:
            time.sleep(0.3)
            return run_processes(marker)
        time.sleep(0.2)
    raise RuntimeError("the tool's sleeps never started")


SIGNAL_CASES: dict[str, tuple[str, signal.Signals, str]] = {
    "sigterm_group_sandboxed": ("workspace-write", signal.SIGTERM, "group"),
    "sigkill_group_sandboxed": ("workspace-write", signal.SIGKILL, "group"),
    "sigkill_wrapper_only_sandboxed": ("workspace-write", signal.SIGKILL, "wrapper"),
    "sigterm_group_unsandboxed": ("danger-full-access", signal.SIGTERM, "group"),
    "sigkill_group_unsandboxed": ("danger-full-access", signal.SIGKILL, "group"),
}


def main(names: list[str]) -> int:
    """Capture the named cases (all by default)."""
    if codex_bin() is None:
        print("codex is not installed: npm ci --prefix tests/realcli", file=sys.stderr)
        return 2
    jobs: dict[str, Callable[[Path], None]] = {
        name: partial(capture, name, case) for name, case in CASES.items()}
    jobs |= {name: partial(signal_case, name, *args) for name, args in SIGNAL_CASES.items()}
    for name in names or list(jobs):
        with tempfile.TemporaryDirectory(prefix=f"codex-{name}-") as tmp:
            jobs[name](Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
