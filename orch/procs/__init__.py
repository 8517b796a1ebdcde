"""The one place that starts or signals processes (SPEC sections 4, 5 and 8).

Identity of a process is its pid *and* its raw start time in clock ticks since
boot (field 22 of `/proc/<pid>/stat`), never a wall-clock time: a pid can be
reused, a start time cannot. Every kill goes through a process group, and a
group is only signalled when its leader's pid still belongs to the process we
started, or no longer belongs to anything (while any member of a group lives,
the kernel gives no new process that pid, so a group whose leader is gone is
still ours).

Only the standard library is used, so importing this module is cheap for a tick.
"""

from __future__ import annotations

from orch.procs.ending import TreeEnd, end_run_tree, signal_process
from orch.procs.groups import (
    group_alive,
    group_members,
    groups_with_env,
    kill_group,
    kill_own_group_members,
    own_group,
    terminate_group,
    terminate_own_group,
)
from orch.procs.identity import (
    Identity,
    boot_id,
    hostname,
    is_zombie,
    liveness,
    self_identity,
    start_ticks,
)
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
from orch.procs.run import GroupChild, GroupRun, run_in_group, spawn_detached
from orch.procs.scan import Proc, find_run_processes, read_proc, snapshot
from orch.procs.subreaper import (
    become_subreaper,
    join_cgroup,
    kill_cgroup,
    make_run_cgroup,
    reap_adopted,
    remove_run_cgroup,
)

__all__ = [
    "MARK_VAR", "SALT_FILE", "GroupChild", "GroupRun", "Identity", "Proc", "TreeEnd",
    "adhoc_mark", "become_subreaper", "boot_id", "end_run_tree", "find_run_processes",
    "group_alive", "group_members", "groups_with_env", "home_id", "hostname", "is_zombie",
    "join_cgroup", "kill_cgroup", "kill_group", "kill_own_group_members", "liveness",
    "make_run_cgroup", "marked_env", "marks_of", "outside_run_env", "own_group", "read_proc",
    "reap_adopted", "remove_run_cgroup", "run_in_group", "run_mark", "self_identity",
    "signal_process", "snapshot", "spawn_detached", "start_ticks", "terminate_group",
    "terminate_own_group",
]
