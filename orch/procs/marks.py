"""The run mark: `ORCH_RUN_MARK=<home id>:<run id>` in every process of a run.

The kernel copies the environment into every child and keeps it through
`setsid`, double forks and the death of every ancestor, so a scan of
`/proc/*/environ` finds a run's processes after its supervisor or tick died.
The home id is a hash of a random salt written once into the home and of the
home directory's device and inode: two homes never share it (their run ids
do). Marks nest: the variable holds a comma-separated list, and a process
started outside any run of a home (a kicked tick) gets it with that home's
marks removed. See docs/processes.md.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

MARK_VAR = "ORCH_RUN_MARK"
SALT_FILE = "run-mark-salt"
_MARK_RE = re.compile(r"^[A-Za-z0-9_.-]+:[A-Za-z0-9_.-]+$")


def home_id(home: Path) -> str:
    """This home's id for run marks: 16 hex digits, stable while the home directory lives.

    A hash of the home's random salt (written once, atomically, into
    `<home>/run-mark-salt`) and of the directory's device and inode. Raises
    OSError when the home does not exist or the salt cannot be written.
    """
    import hashlib

    st = os.stat(home)
    salt = _home_salt(Path(home))
    return hashlib.sha256(f"{salt}:{st.st_dev}:{st.st_ino}".encode()).hexdigest()[:16]


def _home_salt(home: Path) -> str:
    """The home's salt; created with link(2) so concurrent ticks agree on one."""
    path = home / SALT_FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    tmp = home / f".{SALT_FILE}.{os.getpid()}.{os.urandom(4).hex()}"
    tmp.write_text(os.urandom(16).hex() + "\n", encoding="ascii")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process created it first: use theirs
    finally:
        tmp.unlink()
    return path.read_text(encoding="ascii").strip()


def run_mark(home: str, run_id: int | str) -> str:
    """The mark of run `run_id` of the home whose `home_id` is `home`."""
    mark = f"{home}:{run_id}"
    check_mark(mark)
    return mark


def adhoc_mark() -> str:
    """A one-off mark for a run that belongs to no home (`orch test-run` without one)."""
    return f"{os.urandom(8).hex()}:adhoc"


def check_mark(mark: str) -> None:
    if not _MARK_RE.match(mark):
        raise ValueError(f"not a run mark: {mark!r} (expected HOMEID:RUNID)")


def _home_part(mark: str) -> str:
    return mark.partition(":")[0]


def marks_of(value: str) -> list[str]:
    """The marks listed in a value of ORCH_RUN_MARK (comma-separated, empties dropped)."""
    return [part for part in value.split(",") if part]


def marked_env(env: Mapping[str, str], mark: str) -> dict[str, str]:
    """`env` with `mark` appended to ORCH_RUN_MARK (marks of the same home replaced)."""
    check_mark(mark)
    home = _home_part(mark)
    kept = [m for m in marks_of(env.get(MARK_VAR, "")) if _home_part(m) != home]
    return {**env, MARK_VAR: ",".join([*kept, mark])}


def outside_run_env(env: Mapping[str, str], home: str) -> dict[str, str]:
    """`env` for a process started outside every run of home `home` (a kicked tick).

    The variable stays (maybe empty) so a tree walk sees "not this run" and
    stops there, while outer homes' marks (orch under orch) are kept.
    """
    kept = [m for m in marks_of(env.get(MARK_VAR, "")) if _home_part(m) != home]
    return {**env, MARK_VAR: ",".join(kept)}


