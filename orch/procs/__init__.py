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

from orch.procs.child import AgentChild
from orch.procs.groups import (
    group_alive,
    group_members,
    kill_group,
    own_group,
    terminate_group,
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
from orch.procs.run import GroupRun, run_in_group, spawn_detached

__all__ = [
    "AgentChild", "GroupRun", "Identity", "boot_id", "group_alive", "group_members",
    "hostname", "is_zombie", "kill_group", "liveness", "own_group", "run_in_group",
    "self_identity", "spawn_detached", "start_ticks", "terminate_group",
]
