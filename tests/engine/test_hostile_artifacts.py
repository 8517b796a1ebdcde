"""Artifacts an agent wrote cannot be turned against the tick (SPEC sections 5 and 6).

Each case is an agent (a small script, as a hostile or broken agent would be) that
leaves something odd in its task folder and exits 0; the next `orch tick` runs as a
separate process with a wall-clock bound and a memory bound of its own. Reproduced
on the build before this: a FIFO made every later tick block forever in the advance
phase; a 50 MB deliverable was read whole (about 250 MB peak); a nine-level YAML alias
bomb in a review's front matter (under 500 bytes) cost gigabytes when the gate formatted
its error, and the MemoryError left the job for every tick to judge again.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import threading
from typing import Any

import pytest
from support.engine import EngineHome, wait_for, write_script

ANALYSIS = {"name": "analysis", "runner": "agent", "role": "analyst", "gate": "analysis_ready"}
REVIEW = {"name": "review", "runner": "agent", "role": "reviewer", "gate": "review_approved"}
STOP = {"ORCH_MAX_CONCURRENCY": "0"}  # a tick that judges but starts nothing
TICK_BOUND_S = 60
MEMORY_LIMIT = 1536 * 1024 * 1024  # address space of the measured tick: a bomb fails fast

# Nine levels of nine aliases each: 9**9 (387 million) strings once expanded.
ALIAS_BOMB = "\n".join(
    ["a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]"]
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]"
       for i in range(8)]
    + ["verdict: *i"])


def agent(eh: EngineHome, name: str, body: str) -> dict[str, Any]:
    """An agent role whose command is a shell script (body runs with the run's env)."""
    script = write_script(eh.bin / name, f"#!/bin/sh\nset -e\ncd \"$ORCH_ARTIFACTS\"\n{body}\n")
    return {"command": [str(script)], "timeout_s": 60}


def run_agent_stage(eh: EngineHome, stage: dict[str, Any], role: str, body: str) -> int:
    """Configure one agent stage, add a task, start its run, wait until the agent ended."""
    eh.configure(stages=[stage], agents={role: agent(eh, role, body)})
    task = eh.add_task()
    eh.tick()
    job = eh.jobs(task)[0]
    wait_for(lambda: eh.job(job["id"])["status"] != "running", 30, "the agent to end")
    return task


def measured_tick(eh: EngineHome, env: dict[str, str] | None = None
                  ) -> tuple[dict[str, Any], int]:
    """`orch tick --json` as its own process, bounded in time and address space; returns
    its report and its peak RSS in KiB (os.wait4: this child's own rusage)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    out_path, err_path = eh.root / "tick.out", eh.root / "tick.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(eh.orch_argv("tick", "--json"), env=eh.env(env), stdout=out,
                                stderr=err, preexec_fn=limit)
    timer = threading.Timer(TICK_BOUND_S, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode == -signal.SIGKILL:
        pytest.fail(f"orch tick did not finish in {TICK_BOUND_S} s (blocked by an artifact)")
    assert proc.returncode == 0, err_path.read_text()
    return json.loads(out_path.read_text()), usage.ru_maxrss


def verdicts(report: dict[str, Any], task: int) -> list[tuple[str, str]]:
    return [(a["verdict"], a["from"]) for a in report["advanced"] if a["task"] == task]


def retry_reason(eh: EngineHome, task: int) -> str:
    rows = [e for e in eh.events(task) if e["kind"] == "retry"]
    assert rows, eh.events(task)
    return str(rows[-1]["detail"])


def test_a_fifo_deliverable_is_a_retry_and_never_blocks_a_tick(eh: EngineHome) -> None:
    task = run_agent_stage(eh, ANALYSIS, "analyst", "mkfifo 02-analysis.md")
    report, _ = measured_tick(eh, STOP)
    assert verdicts(report, task) == [("RETRY", "analysis")]
    assert report["errors"] == []
    assert "02-analysis.md is a FIFO, not a regular file" in retry_reason(eh, task)
    report, _ = measured_tick(eh)  # later ticks go on claiming work
    assert [c["task"] for c in report["claimed"]] == [task]


def test_a_symlinked_deliverable_is_a_retry(eh: EngineHome) -> None:
    outside = eh.root / "outside.md"
    task = run_agent_stage(eh, ANALYSIS, "analyst",
                           f"echo 'looks fine' > {outside}\nln -s {outside} 02-analysis.md")
    report, _ = measured_tick(eh, STOP)
    assert verdicts(report, task) == [("RETRY", "analysis")]
    assert "02-analysis.md is a symlink, not a regular file" in retry_reason(eh, task)


def test_a_symlinked_task_folder_is_a_retry(eh: EngineHome) -> None:
    elsewhere = eh.root / "elsewhere"
    task = run_agent_stage(eh, ANALYSIS, "analyst",
                           f"mkdir -p {elsewhere}\necho fine > {elsewhere}/02-analysis.md\n"
                           f"cd /\nmv \"$ORCH_ARTIFACTS\" \"$ORCH_ARTIFACTS.moved\"\n"
                           f"ln -s {elsewhere} \"$ORCH_ARTIFACTS\"")
    report, _ = measured_tick(eh, STOP)
    assert verdicts(report, task) == [("RETRY", "analysis")]
    assert "cannot be read safely" in retry_reason(eh, task)


def test_a_50_mb_deliverable_is_refused_without_reading_it(eh: EngineHome) -> None:
    task = run_agent_stage(eh, ANALYSIS, "analyst",
                           "head -c 52428800 /dev/zero | tr '\\0' 'x' > 02-analysis.md")
    assert (eh.home / "tasks" / str(task) / "02-analysis.md").stat().st_size == 50 * 2**20
    report, peak = measured_tick(eh, STOP)
    assert verdicts(report, task) == [("RETRY", "analysis")]
    assert "02-analysis.md is 50 MiB, over the 1 MiB cap" in retry_reason(eh, task)
    _, quiet_peak = measured_tick(eh, STOP)  # the same tick with nothing to judge
    assert peak < quiet_peak + 20 * 1024, (peak, quiet_peak)  # KiB


def test_an_alias_bomb_in_a_review_is_malformed_and_costs_no_memory(eh: EngineHome) -> None:
    front = f"---\n{ALIAS_BOMB}\n---\n# Review\n\nLooks good.\n"
    assert len(ALIAS_BOMB) < 500
    (eh.root / "bomb.md").write_text(front, encoding="utf-8")
    task = run_agent_stage(eh, REVIEW, "reviewer", f"cp {eh.root / 'bomb.md'} 12-review.md")
    report, peak = measured_tick(eh, STOP)
    assert verdicts(report, task) == [("RETRY", "review")]
    assert report["errors"] == []
    assert "12-review.md is malformed: front matter uses YAML anchors or aliases" \
        in retry_reason(eh, task)
    _, quiet_peak = measured_tick(eh, STOP)
    assert peak < quiet_peak + 20 * 1024, (peak, quiet_peak)  # KiB, not gigabytes
    assert eh.job(eh.jobs(task)[0]["id"])["status"] == "queued"  # judged once, retried


def test_a_non_scalar_verdict_is_malformed_and_quoted_briefly(eh: EngineHome) -> None:
    long_word = "APPROVE" + "x" * 5000
    task = run_agent_stage(eh, REVIEW, "reviewer",
                           f"printf -- '---\\nverdict: [APPROVE]\\nreason: {long_word}\\n---\\n"
                           "ok\\n' > 12-review.md")
    report, _ = measured_tick(eh, STOP)
    assert verdicts(report, task) == [("RETRY", "review")]
    assert "12-review.md: verdict (a list) is not APPROVE or REQUEST_CHANGES" \
        in retry_reason(eh, task)
    eh.configure(stages=[REVIEW], agents={"reviewer": agent(
        eh, "long", f"printf -- '---\\nverdict: {long_word}\\n---\\nok\\n' > 12-review.md")})
    eh.tick()
    job = eh.jobs(task)[0]
    wait_for(lambda: eh.job(job["id"])["status"] != "running", 30, "the agent to end")
    report, _ = measured_tick(eh, STOP)
    reason = retry_reason(eh, task)
    assert "is not APPROVE or REQUEST_CHANGES" in reason
    assert "x" * 200 not in reason and len(reason) < 400
    for event in eh.events(task):
        assert "x" * 201 not in str(event["detail"])


def test_judging_that_raises_is_a_retry_naming_the_error_and_is_not_repeated(
        eh: EngineHome) -> None:
    task = run_agent_stage(eh, ANALYSIS, "analyst", "echo ok > 02-analysis.md")
    job = eh.jobs(task)[0]
    # a run row whose start time no longer parses: judging it raises
    eh.write("UPDATE runs SET started_at = 'not a time' WHERE id = ?", (job["run_id"],))
    report, _ = measured_tick(eh, STOP)
    assert verdicts(report, task) == [("RETRY", "analysis")]
    assert len(report["errors"]) == 1 and report["errors"][0]["job"] == job["id"]
    assert "judging the run raised ValueError" in retry_reason(eh, task)
    again, _ = measured_tick(eh, STOP)
    assert again["errors"] == [] and verdicts(again, task) == []
    assert eh.job(job["id"])["status"] == "queued" and eh.job(job["id"])["attempt"] == 2
