"""Permission denials an agent's CLI reports (SPEC section 5): recorded on the run, shown
in `orch task show` and in `orch queue`'s reason, and left to the gate.

A stand-in agent prints a result object in the shape of `claude -p --output-format json`
with `permission_denials`, exits 0 and writes no deliverable: the gate, not the denial,
makes it a RETRY.
"""

from __future__ import annotations

import json

from support.engine import EngineHome, write_script

ANALYSIS = {"name": "analysis", "runner": "agent", "role": "analyst",
            "gate": "analysis_ready", "deliverables": ["02-analysis.md"]}
DENIED = {"type": "result", "subtype": "success", "is_error": False, "result": "done",
          "session_id": "s-1", "total_cost_usd": 0.01,
          "usage": {"input_tokens": 3, "output_tokens": 4},
          "permission_denials": [
              {"tool_name": "Write", "tool_use_id": "t1",
               "tool_input": {"file_path": "/elsewhere/02-analysis.md"}},
              {"tool_name": "Bash", "tool_use_id": "t2",
               "tool_input": {"command": "curl -s http://example.invalid/"}}]}


def test_a_denied_run_is_judged_by_its_gate_and_its_denials_are_shown(eh: EngineHome) -> None:
    agent = write_script(eh.bin / "denied", f"#!/bin/sh\necho '{json.dumps(DENIED)}'\n")
    eh.configure(stages=[ANALYSIS], agents={"analyst": {
        "command": [str(agent)], "output": "claude-json", "timeout_s": 60}})
    task = eh.add_task()
    eh.tick_until(lambda: eh.events(task, "retry"), timeout=60, what="the gate's RETRY")
    (run,) = [r for job in eh.jobs(task) for r in eh.runs(job["id"])][:1]
    assert run["outcome"] == "succeeded" and run["denials"] == 2
    (denied,) = eh.events(task, "denied")
    assert "2 permission denial(s)" in denied["detail"]
    assert "Write" in denied["detail"] and "Bash" in denied["detail"]
    shown = eh.cli("task", "show", str(task), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["runs"][0]["denials"] == 2
    queue = eh.cli("queue", "--json")
    assert queue.returncode == 0, queue.stderr
    (row,) = [t for t in json.loads(queue.stdout)["tasks"] if t["id"] == task]
    assert "its last run reported 2 permission denial(s)" in row["reason"], row
