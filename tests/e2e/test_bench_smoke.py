"""The benchmarks still run (tiny sizes, no timing asserted).

`bench/run.py --smoke` runs every benchmark of docs/performance.md with a
handful of jobs and one round, so a change that breaks the benchmark script
(a renamed option, a new table column) fails here instead of on the next
full run. What the benchmarks found is pinned beside the features: the
tick's queries use indexes (tests/state/test_query_plans.py), the YAML cache
(tests/unit/test_yaml_cache.py), frozen config records
(tests/unit/test_config.py), a run builds only its command
(tests/cli/test_cli_tasks.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.checkout import CHECKOUT as ROOT
from support.env import keep_env

# ---------------------------------------------------------------- the benchmark script


def test_the_benchmark_runs_in_smoke_mode_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    out.write_text("# Performance\n\nkept text\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n"
                   "\n## Analysis\n\nkept too\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if keep_env(k)}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Performance\n\nkept text\n")  # only the generated block changes
    assert text.rstrip().endswith("kept too") and "\nold\n" not in text
    assert "smoke run: tiny sizes" in text
    for row in ("| orch tick (idle) | empty Typer app", "| orch tick with history |",
                "1 tick loop", "4 overlapping tick loops", "orch claim_next (in-process)",
                "task add → done, six `command` stages", "gap job end → next job start",
                "| orch tick over 200 waiting", "| orch task import (200 tasks)"):
        assert row in text, row
    assert "benchmark failed" not in text


def test_the_report_keeps_text_around_the_generated_block(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import run as bench_run
    finally:
        sys.path.remove(str(ROOT / "bench"))
    report = tmp_path / "perf.md"
    bench_run.write_report(report, f"{bench_run.BEGIN}\nfirst\n{bench_run.END}\n")
    assert "## Analysis" in report.read_text(encoding="utf-8")
    text = report.read_text(encoding="utf-8").replace("## Analysis", "## Analysis\n\nmine")
    report.write_text(text, encoding="utf-8")
    bench_run.write_report(report, f"{bench_run.BEGIN}\nsecond\n{bench_run.END}\n")
    text = report.read_text(encoding="utf-8")
    assert "second" in text and "first" not in text and "mine" in text

