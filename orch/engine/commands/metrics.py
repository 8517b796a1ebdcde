"""`orch metrics`: the state as Prometheus text, for node_exporter's textfile collector.

Everything read here is cheap whatever the history: the counters table, the
open tasks (partial index), the running/queued jobs (partial indexes) and one
meta row. Closed tasks are not counted with a GROUP BY over history: their
numbers come from the counters `tasks_done_total`, `tasks_failed_total` and
`tasks_cancelled_total`, bumped in the transaction that closes a task.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orch.errors import RefusedError, UsageError
from orch.state import counters, hosts, jobs, maint
from orch.state.db import Database
from orch.timeutil import epoch_of

CLOSED_COUNTERS = (("done", "tasks_done_total"), ("failed", "tasks_failed_total"),
                   ("cancelled", "tasks_cancelled_total"))
OPEN_STATES = ("waiting", "active", "needs_input", "held")
TEXTFILE_MODE = 0o644  # node_exporter usually runs as another user

COUNTER_HELP = {
    "impossible_queued_total": "Queued jobs found carrying run ownership and repaired by "
                               "the sanitize phase.",
    "reaped_total": "Running jobs whose run was found dead and reaped.",
    "ticks_total": "Ticks that ran to their end.",
    "claims_total": "Jobs claimed by a tick.",
    "tasks_done_total": "Tasks that reached the done stage.",
    "tasks_failed_total": "Tasks that ended in the failed stage.",
    "tasks_cancelled_total": "Tasks cancelled by an operator.",
}
_NOT_NAME = re.compile(r"[^a-zA-Z0-9_:]")


@dataclass(frozen=True)
class Metrics:
    """One reading of the state."""

    counters: dict[str, int]
    tasks: dict[tuple[str, str], int]  # (stage, state) -> count
    jobs_running: int
    jobs_queued: int
    last_tick_at: float | None  # epoch seconds
    oldest_waiting_age_s: float
    taken_at: float = field(default_factory=time.time)
    repo_tasks: dict[tuple[str, str], int] = field(default_factory=dict)  # (repo, state) -> n
    hosts: tuple[HostGauges, ...] = ()


@dataclass(frozen=True)
class HostGauges:
    """One host of the state (SPEC section 11), by the database's clock."""

    name: str
    up: bool
    last_seen_age_s: float
    jobs_running: int


def collect(db: Database, stages: tuple[str, ...] = (), now: float | None = None,
            repos: tuple[str, ...] = (), host_timeout_s: float = 300) -> Metrics:
    """Read the metrics; STAGES (the pipeline's) and REPOS (the configured ones) get zero
    series for every open state."""

    moment = time.time() if now is None else now
    values = counters.all_counters(db)
    tasks: dict[tuple[str, str], int] = {(stage, state): 0
                                         for stage in stages for state in OPEN_STATES}
    for row in maint.open_task_counts(db):
        tasks[(str(row["stage"]), str(row["state"]))] = int(row["n"])
    for stage, name in CLOSED_COUNTERS:
        tasks[(stage, "closed")] = values.get(name, 0)
    by_repo = {(repo, state): 0 for repo in repos for state in OPEN_STATES}
    for row in maint.open_task_counts_by_repo(db):
        by_repo[(str(row["repo"]), str(row["state"]))] = int(row["n"])
    last = counters.last_tick(db)
    waiting = maint.oldest_waiting_since(db)
    return Metrics(
        counters=values, tasks=tasks, repo_tasks=by_repo, jobs_running=jobs.running_count(db),
        jobs_queued=jobs.queued_count(db),
        last_tick_at=epoch_of(last) if last else None,
        oldest_waiting_age_s=max(0.0, moment - epoch_of(waiting)) if waiting else 0.0,
        taken_at=moment, hosts=host_gauges(db, host_timeout_s))


def host_gauges(db: Database, host_timeout_s: float) -> tuple[HostGauges, ...]:
    running = hosts.running_by_host(db)
    return tuple(HostGauges(host.name, host.alive(host_timeout_s), host.age_s,
                            running.get(host.name, 0)) for host in hosts.all_hosts(db))


def metric_name(counter: str) -> str:
    """`orch_<counter>`, with anything Prometheus does not allow in a name replaced by `_`."""
    return "orch_" + _NOT_NAME.sub("_", counter)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _family(name: str, kind: str, help_text: str,
            samples: Sequence[tuple[str, float]]) -> list[str]:
    escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    lines = [f"# HELP {name} {escaped}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {_number(value)}" for labels, value in samples]
    return lines


def render(metrics: Metrics) -> str:
    """The Prometheus text exposition format (version 0.0.4), newline-terminated."""
    lines: list[str] = []
    names = {**{name: 0 for _stage, name in CLOSED_COUNTERS}, **metrics.counters}
    cost = names.pop(jobs.COST_COUNTER, 0)
    for counter in sorted(names):
        help_text = COUNTER_HELP.get(counter, f"The counter {counter} of orch's state.")
        lines += _family(metric_name(counter), "counter", help_text,
                         [("", names[counter])])
    samples = [(f'{{stage="{_label(stage)}",state="{_label(state)}"}}', count)
               for (stage, state), count in sorted(metrics.tasks.items())]
    lines += _family("orch_tasks", "gauge", "Tasks by stage and state (closed tasks: counted "
                     "when they closed).", samples)
    samples = [(f'{{repo="{_label(repo)}",state="{_label(state)}"}}', count)
               for (repo, state), count in sorted(metrics.repo_tasks.items())]
    lines += _family("orch_repo_tasks", "gauge", "Open tasks by repo and state.", samples)
    lines += _family("orch_cost_usd_total", "counter", "What the agents' runs cost, in USD, "
                     "as their CLIs reported it.", [("", round(cost / 1_000_000, 6))])
    lines += _family("orch_jobs_running", "gauge", "Jobs running now.",
                     [("", metrics.jobs_running)])
    lines += _family("orch_jobs_queued", "gauge", "Jobs queued now.",
                     [("", metrics.jobs_queued)])
    lines += _family("orch_last_tick_timestamp_seconds", "gauge",
                     "When the last tick finished (Unix time; 0: never).",
                     [("", metrics.last_tick_at or 0)])
    lines += _family("orch_oldest_waiting_task_age_seconds", "gauge",
                     "Seconds since the oldest task waiting for a serial-gate slot last "
                     "changed (0: none waits).", [("", round(metrics.oldest_waiting_age_s, 3))])
    lines += _host_families(metrics.hosts)
    return "\n".join(lines) + "\n"


def _host_families(gauges: tuple[HostGauges, ...]) -> list[str]:
    """Per-host gauges (SPEC section 11); one series per row of `hosts`."""
    if not gauges:
        return []
    label = [(f'{{host="{_label(g.name)}"}}', g) for g in gauges]
    lines = _family("orch_host_up", "gauge", "1 while the host's last tick is younger than "
                    "host_timeout_s (by the database's clock), else 0.",
                    [(key, int(g.up)) for key, g in label])
    lines += _family("orch_host_last_seen_age_seconds", "gauge",
                     "Seconds since the host's last tick wrote its heartbeat row.",
                     [(key, round(g.last_seen_age_s, 3)) for key, g in label])
    lines += _family("orch_host_jobs_running", "gauge", "Jobs running on the host now.",
                     [(key, g.jobs_running) for key, g in label])
    return lines


def check_textfile_name(path: Path) -> None:
    """node_exporter's textfile collector reads `*.prom` files only: refuse another name
    (`-o json` would otherwise quietly write a file named `json`)."""
    if path.suffix != ".prom":
        raise UsageError(f"--output {path}: the file name must end in .prom (node_exporter's "
                         "textfile collector reads only those; orch metrics prints the "
                         "Prometheus text format, there is no other)")


def write_textfile(path: Path, text: str) -> None:
    """Write PATH atomically (a temp file in the same directory, then os.replace).

    The temp name starts with a dot and does not end in `.prom`, so the
    textfile collector never reads a half-written file; the result is 0644.
    """

    directory = path.parent
    if not directory.is_dir():
        raise RefusedError(f"{path}: the directory {directory} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(directory))
    except OSError as exc:
        raise RefusedError(f"{path}: cannot write in {directory}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fchmod(handle.fileno(), TEXTFILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise RefusedError(f"{path}: cannot write it: {exc.strerror or exc}") from exc
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
