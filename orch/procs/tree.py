"""Every process of a run, wherever it went: the marks, the scan, the ending, the
subreaper (docs/processes.md). One import for the callers that end runs; a tick that
ends no run never loads it."""

from __future__ import annotations

from orch.procs.ending import TreeEnd, end_run_tree, signal_process
from orch.procs.marks import (
    MARK_VAR,
    SALT_FILE,
    adhoc_mark,
    home_id,
    marked_env,
    marks_of,
    outside_run_env,
    run_mark,
)
from orch.procs.scan import Proc, find_run_processes, read_proc, snapshot, start_ticks
from orch.procs.subreaper import (
    become_subreaper,
    is_subreaper,
    join_cgroup,
    kill_cgroup,
    make_run_cgroup,
    reap_adopted,
    remove_run_cgroup,
)

__all__ = [
    "MARK_VAR", "SALT_FILE", "Proc", "TreeEnd", "adhoc_mark", "become_subreaper",
    "end_run_tree", "find_run_processes", "home_id", "is_subreaper", "join_cgroup",
    "kill_cgroup", "make_run_cgroup", "marked_env", "marks_of", "outside_run_env",
    "read_proc", "reap_adopted", "remove_run_cgroup", "run_mark", "signal_process",
    "snapshot", "start_ticks",
]
