"""The benchmarks still run (tiny sizes, no timing asserted), and the fixes they led to hold.

`bench/run.py --smoke` runs every benchmark of docs/performance.md with a
handful of jobs and one round, so a change that breaks the benchmark script
(a renamed option, a new table column) fails here instead of on the next
full run. The other tests pin what the benchmarks found: the tick's queries
use indexes, orch.yaml and the pipeline are read from the YAML cache while
unchanged, config records built without dataclass code generation behave
like frozen dataclasses, and a run builds only the command it needs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support.checkout import CHECKOUT as ROOT

from orch import yamlio
from orch.cli.context import YAML_CACHE_FILE, AppContext
from orch.config import frozen_record
from orch.errors import ConfigError

CliResult = tuple[int, str, str]


# ---------------------------------------------------------------- the benchmark script


def test_the_benchmark_runs_in_smoke_mode_and_writes_its_report(tmp_path: Path) -> None:
    out = tmp_path / "performance.md"
    out.write_text("# Performance\n\nkept text\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n"
                   "\n## Analysis\n\nkept too\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Performance\n\nkept text\n")  # only the generated block changes
    assert text.rstrip().endswith("kept too") and "\nold\n" not in text
    assert "smoke run: tiny sizes" in text
    for row in ("| orch tick (idle) | empty Typer app", "| orch tick with history |",
                "1 tick loop", "4 overlapping tick loops", "orch claim_next (in-process)"):
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


# ---------------------------------------------------------------- the tick's queries


def test_every_tick_query_over_history_uses_an_index(orch_home: Path) -> None:
    """No SELECT of a tick scans tasks, jobs, runs or events (they grow with history)."""
    from orch.engine.tick import run_tick

    db_path = orch_home / "orch.db"
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO tasks (id, repo, title, stage, state, created_at, updated_at) "
        "VALUES (?, 'app', 't', 'done', 'closed', '2025-01-01', '2025-01-01')",
        [(i,) for i in range(1, 301)])
    conn.executemany(
        "INSERT INTO jobs (task_id, stage, runner, status, verdict, judged, created_at) "
        "VALUES (?, 'review', 'agent', 'succeeded', 'PASS', 1, '2025-01-01')",
        [(i % 300 + 1,) for i in range(1500)])
    conn.executemany(  # open tasks in every state a tick looks for
        "INSERT INTO tasks (repo, title, stage, state, admitted, hold_reason, created_at, "
        "updated_at) VALUES ('app', 'open', 'analysis', ?, ?, ?, '2025-01-01', '2025-01-01')",
        [("waiting", 0, None), ("held", 1, "budget"), ("needs_input", 1, None)])
    conn.execute("COMMIT")
    conn.close()

    ctx = AppContext(home_option=str(orch_home))
    statements: list[str] = []
    ctx.db.conn.set_trace_callback(statements.append)
    run_tick(ctx.settings, ctx.pipeline, ctx.db, max_claims=1)
    ctx.db.conn.set_trace_callback(None)
    selects = {s for s in statements if s.lstrip().upper().startswith("SELECT")}
    assert selects
    scans = {}
    for sql in selects:
        plan = [row[3] for row in ctx.db.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
        full = [step for step in plan
                if step.split()[:2] in (["SCAN", "tasks"], ["SCAN", "jobs"], ["SCAN", "runs"],
                                        ["SCAN", "events"]) and "INDEX" not in step]
        if full:
            scans[sql] = full
    ctx.close()
    assert not scans, scans


# ---------------------------------------------------------------- the YAML cache


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files just written count as settled (the cache waits a few seconds otherwise)."""
    monkeypatch.setattr(yamlio, "RACY_NS", -10**12)


def load(home: Path) -> AppContext:
    ctx = AppContext(home_option=str(home))
    assert ctx.settings is not None and ctx.pipeline is not None
    return ctx


def test_a_second_command_reads_settings_and_pipeline_without_yaml(
        orch_home: Path, settled: None, clean_env: None) -> None:
    load(orch_home)
    cached = json.loads((orch_home / YAML_CACHE_FILE).read_text(encoding="utf-8"))
    assert str(orch_home / "orch.yaml") in cached["files"]
    assert any(name.endswith("pipeline.yaml") for name in cached["files"])
    probe = ("import sys; from orch.cli.context import AppContext; "
             f"ctx = AppContext(home_option={str(orch_home)!r}); "
             "print(ctx.settings.repos['app'].max_active, len(ctx.pipeline.stages), "
             "'yaml' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    fresh = load(orch_home)
    assert done.stdout.split() == [str(fresh.settings.repos["app"].max_active),
                                   str(len(fresh.pipeline.stages)), "False"]


def test_an_edit_of_the_same_size_is_seen(orch_home: Path, settled: None,
                                          clean_env: None) -> None:
    assert load(orch_home).settings.max_concurrency == 1
    config = orch_home / "orch.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("max_concurrency: 1 ", "max_concurrency: 7 ", 1),
                      encoding="utf-8")
    assert config.stat().st_size == len(text.encode())
    assert load(orch_home).settings.max_concurrency == 7


def test_a_fresh_file_is_not_cached(orch_home: Path, clean_env: None) -> None:
    (orch_home / "orch.yaml").write_text("max_concurrency: 2\n", encoding="utf-8")
    load(orch_home)
    cached = orch_home / YAML_CACHE_FILE
    files = json.loads(cached.read_text())["files"] if cached.exists() else {}
    assert str(orch_home / "orch.yaml") not in files


def test_a_broken_cache_is_ignored_and_replaced(orch_home: Path, settled: None,
                                                clean_env: None) -> None:
    (orch_home / YAML_CACHE_FILE).write_text("{not json", encoding="utf-8")
    assert load(orch_home).settings.repos["app"].max_active == 1
    assert json.loads((orch_home / YAML_CACHE_FILE).read_text(encoding="utf-8"))["files"]


def test_config_errors_from_the_cache_keep_their_line(orch_home: Path, settled: None,
                                                      clean_env: None) -> None:
    config = orch_home / "orch.yaml"
    config.write_text("max_attempts: 3\nmax_concurrency: -1\n", encoding="utf-8")
    messages = []
    for _ in range(2):  # parsed, then from the cache
        with pytest.raises(ConfigError) as caught:
            load(orch_home)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and ":2" in messages[0]


def test_values_json_cannot_keep_are_not_cached(tmp_path: Path, settled: None) -> None:
    doc = tmp_path / "doc.yaml"
    doc.write_text("when: 2024-01-01\nhow_many: .inf\n", encoding="utf-8")
    cache = tmp_path / "cache.json"
    with yamlio.caching(cache):
        data, marks = yamlio.load_yaml_file(doc)
        again, _ = yamlio.load_yaml_file(doc)
    assert str(data["when"]) == "2024-01-01" and again == data and marks[("when",)] == 1
    assert not cache.exists()


def test_without_the_cache_context_nothing_is_written(tmp_path: Path, settled: None) -> None:
    doc = tmp_path / "doc.yaml"
    doc.write_text("a: [1, 2]\n", encoding="utf-8")
    assert yamlio.load_yaml_file(doc)[0] == {"a": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.yaml"]


# ---------------------------------------------------------------- frozen records


@dataclasses.dataclass(frozen=True)
class Reference:
    name: str
    size: int = 3
    tags: tuple[str, ...] = ()
    extra: dict[str, str] = dataclasses.field(default_factory=dict)


@frozen_record
class Record:
    name: str
    size: int = 3
    tags: tuple[str, ...] = ()
    extra: dict[str, str] = dataclasses.field(default_factory=dict)


def test_a_frozen_record_behaves_like_a_frozen_dataclass() -> None:
    for cls in (Reference, Record):
        one, same, other = cls("a", 4), cls(name="a", size=4), cls("b")
        assert repr(one) == f"{cls.__name__}(name='a', size=4, tags=(), extra={{}})"
        assert one == same and one != other and one != ("a", 4, (), {})
        assert one.extra is not cls("a").extra  # a fresh default each time
        assert dataclasses.replace(one, size=9).size == 9
        assert dataclasses.asdict(other) == {"name": "b", "size": 3, "tags": (), "extra": {}}
        assert [f.name for f in dataclasses.fields(cls)] == ["name", "size", "tags", "extra"]
        with pytest.raises(dataclasses.FrozenInstanceError):
            one.size = 5  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            del one.name  # type: ignore[misc]
        for args, kwargs in (((), {}), (("a", 1, (), {}, 5), {}), (("a",), {"name": "b"}),
                             ((), {"name": "a", "colour": "red"})):
            with pytest.raises(TypeError):
                cls(*args, **kwargs)
    hashable = Record("a", tags=("x",), extra=None)  # type: ignore[arg-type]
    assert hash(hashable) == hash(Record("a", tags=("x",), extra=None))  # type: ignore[arg-type]


# ---------------------------------------------------------------- building only one command


def test_a_run_builds_only_its_command_and_help_still_lists_all(
        cli: Callable[..., CliResult], orch_home: Path) -> None:
    from orch.cli import _app_for, app

    slim = _app_for(["--home", "x", "tick", "--json"])
    assert [info.name for info in slim.registered_commands] == ["tick"]
    assert not slim.registered_groups
    task = _app_for(["task", "list"])
    assert len(task.registered_groups) == 1 and not task.registered_commands
    assert _app_for(["--help"]) is app and _app_for(["nosuch"]) is app
    code, out, _ = cli(orch_home, "tick", "--json")
    assert code == 0 and json.loads(out)["claimed"] == []
    code, _, err = cli(orch_home, "tikc")
    assert code == 2 and "tick" in err
    code, out, _ = cli(None, "--help")
    assert code == 0 and "queue" in out and "tick" in out
