"""`orch doctor`: is this home able to work? (SPEC section 8)

Each check is a name, a status (ok, warn or fail) and one line of detail. A
broken config is a failed check, not a crash, and the remaining checks still
say what they can. Doctor only reads: it never creates or migrates the
database and never changes the home.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orch import gitops, testenv
from orch.availability import repo_problem
from orch.config import RepoConfig, Settings, load_settings
from orch.errors import OrchError
from orch.home import CONFIG_FILE, DB_FILE
from orch.machine import Pipeline
from orch.pipeline import load_pipeline
from orch.procs import run_in_group
from orch.state import is_postgres
from orch.state.schema import SCHEMA_VERSION
from orch.timeutil import parse_iso

OK, WARN, FAIL = "ok", "warn", "fail"
TICK_STALE_S = 300  # a tick older than this: cron seems not to run
PROBE_TIMEOUT_S = 30.0  # each ssh channel test and the test command's probe
UV_PROBE_TIMEOUT_S = 300.0  # `uv run` syncs the stand-in worktree's .venv first
NETWORK_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afs")


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(check.status == FAIL for check in self.checks)

    @property
    def exit_status(self) -> int:
        """1 when any check failed, else 0 (warnings don't fail)."""
        return 1 if self.failed else 0

    def as_dict(self) -> dict[str, Any]:
        """`orch doctor --json`."""
        return {"checks": [check.as_dict() for check in self.checks]}


def run_doctor(home: Path) -> DoctorReport:
    """Run every check for HOME, in the order a person would fix them."""
    report = DoctorReport()
    add = report.checks.append
    settings = _check_config(home, add)
    pipeline = _check_pipeline(settings, add) if settings is not None else None
    db_path = settings.db_path if settings is not None else home / DB_FILE
    if settings is not None and settings.state and is_postgres(settings.state):
        readable, last_tick = _check_shared_state(settings, add)
    else:
        readable, last_tick = _check_database(db_path, add)
    if settings is not None:
        _check_variables(settings, add)
        env = _check_env_file(settings, add)
        _check_repos(settings, add)
        if pipeline is not None:
            _check_agents(settings, pipeline, env, add)
            _check_tests(settings, pipeline, env, add)
            _check_staging(settings, pipeline, env, add)
    if readable:
        add(tick_check(last_tick, home))
    return report


Add = Callable[[Check], None]


# --- config and pipeline ---------------------------------------------------------


def _check_config(home: Path, add: Add) -> Settings | None:

    try:
        settings = load_settings(home)
    except OrchError as exc:
        add(Check("config", FAIL, str(exc)))
        return None
    if not settings.config_file.exists():
        add(Check("config", WARN, f"no {CONFIG_FILE} in {home}: built-in defaults "
                  "(run orch init)"))
    else:
        add(Check("config", OK, f"{settings.config_file} loads"))
    return settings


def _check_pipeline(settings: Settings, add: Add) -> Pipeline | None:

    try:
        pipeline = load_pipeline(settings)
    except OrchError as exc:
        add(Check("pipeline", FAIL, str(exc)))
        return None
    add(Check("pipeline", OK, f"{pipeline.source}: {' -> '.join(pipeline.names)}"))
    return pipeline


def _check_variables(settings: Settings, add: Add) -> None:
    """warn about ORCH_* variables that set nothing (typos); silent when there is none."""
    from orch.engine.commands.config_show import unknown_variables

    warnings = unknown_variables(settings.environ)
    if warnings:
        add(Check("environment", WARN, "; ".join(warnings)))


def _check_env_file(settings: Settings, add: Add) -> dict[str, str]:
    """The environment agents and runners get (orch's own + env_file), checking env_file."""
    from orch.agents import read_env_file

    env = dict(settings.environ)
    if settings.env_file is None:
        return env
    try:
        values = read_env_file(settings.env_file)
    except OrchError as exc:
        add(Check("env_file", FAIL, str(exc)))
        return env
    add(Check("env_file", OK, f"{settings.env_file}: {len(values)} variable(s)"))
    return env | values


# --- database and tick -------------------------------------------------------------


def _check_database(path: Path, add: Add) -> tuple[bool, str | None]:
    """Check the state file; returns (readable, last_tick_at)."""
    from orch.state.health import inspect_file

    if not path.exists():
        add(Check("database", FAIL, f"no database at {path} (run orch init)"))
        return False, None
    if path.is_dir():
        add(Check("database", FAIL, f"{path} is a directory, not a database"))
        return False, None
    try:
        health = inspect_file(path)
    except OrchError as exc:
        add(Check("database", FAIL, str(exc)))
        return False, None
    check = database_check(path, list(health.problems), health.version, health.journal_mode)
    add(check)
    return check.status != FAIL, health.last_tick_at


def _check_shared_state(settings: Settings, add: Add) -> tuple[bool, str | None]:
    """A PostgreSQL state (SPEC section 11): reachable, its schema, and the live hosts
    agreeing on the limits (and merge.push on every repo several hosts share)."""
    from orch.engine.cluster import Cluster
    from orch.engine.commands.init import open_state
    from orch.state import counters, hosts
    from orch.state.postgres import redact

    where = redact(settings.state or "")
    try:
        db = open_state(settings, create=False)
    except OrchError as exc:
        add(Check("database", FAIL, str(exc)))
        return False, None
    try:
        add(Check("database", OK, f"{where}: reachable, schema version {db.schema_version()}"))
        cluster = Cluster.single(settings).with_hosts(hosts.all_hosts(db))
        problems = cluster.disagreements() + cluster.shared_repos_without_push()
        live = ", ".join(h.name for h in cluster.live()) or "none yet"
        add(Check("hosts", FAIL, "; ".join(problems)) if problems
            else Check("hosts", OK, f"live hosts: {live}"))
        return True, counters.last_tick(db)
    finally:
        db.close()


def database_check(path: Path, problems: list[str], version: int, mode: str) -> Check:
    """Judge what the database said: integrity, schema version, journal, filesystem."""

    if problems:
        return Check("database", FAIL, f"{path}: integrity check failed: "
                     + "; ".join(problems) + " (restore a backup)")
    if version > SCHEMA_VERSION:
        return Check("database", FAIL, f"{path}: schema version {version} is newer than this "
                     f"orch ({SCHEMA_VERSION}): upgrade orch")
    fs = filesystem_type(path)
    if fs in NETWORK_FILESYSTEMS:
        return Check("database", WARN, f"{path} is on a {fs} filesystem: SQLite's WAL needs "
                     "a local one (move the home)")
    if version < SCHEMA_VERSION:
        return Check("database", WARN, f"{path}: schema version {version}, this orch uses "
                     f"{SCHEMA_VERSION}: the next orch command migrates it")
    return Check("database", OK, f"{path}: integrity ok, schema version {version}, "
                 f"journal {mode}")


def filesystem_type(path: Path) -> str | None:
    """The type of the filesystem holding PATH, from /proc/self/mounts (None if unknown)."""
    try:
        lines = Path("/proc/self/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, fields[2]
    return kind


def tick_check(last_tick_at: str | None, home: Path, now_s: float | None = None) -> Check:
    """ok when a tick ran in the last 5 minutes; warn otherwise: cron seems not to run."""


    hint = (f" (`orch --home {shlex.quote(str(home))} schedule --cron` prints the crontab "
            "line, `schedule --systemd --write` writes a systemd timer)")
    if not last_tick_at:
        return Check("tick", WARN, f"no tick has run yet: cron seems not to run{hint}")
    now = time.time() if now_s is None else now_s
    age = max(0.0, now - parse_iso(last_tick_at).timestamp())
    if age > TICK_STALE_S:
        return Check("tick", WARN, f"the last tick was {_ago(age)} ago ({last_tick_at[:19]}Z): "
                     f"cron seems not to run{hint}")
    return Check("tick", OK, f"the last tick was {_ago(age)} ago")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} days"


# --- repos -------------------------------------------------------------------------


def _check_repos(settings: Settings, add: Add) -> None:
    if not settings.repos:
        add(Check("repos", WARN, f"no repos in {settings.config_file}: add one under "
                  "`repos:`"))
    for repo in settings.repos.values():
        add(repo_check(repo))


def repo_check(repo: RepoConfig) -> Check:
    """fail when the repo is unavailable or its default branch is missing."""

    name = f"repo {repo.name}"
    reason = repo_problem(repo)
    if reason is not None:
        return Check(name, FAIL, reason)
    try:
        head = gitops.head_commit(repo.path, f"refs/heads/{repo.default_branch}")
    except OrchError:
        return Check(name, FAIL, f"{repo.path}: default branch {repo.default_branch!r} "
                     "does not exist (set default_branch)")
    return Check(name, OK, f"{repo.path}: {repo.default_branch} at {head[:12]}")


# --- commands on PATH --------------------------------------------------------------


def which(program: str, env: Mapping[str, str]) -> str | None:
    """shutil.which with the PATH the command will really get."""
    return shutil.which(program, path=env.get("PATH", os.defpath))


def needed_roles(settings: Settings, pipeline: Pipeline) -> dict[str, list[str]]:
    """{role: [stages]} for every agent the pipeline runs (tester when the runner is off)."""
    roles: dict[str, list[str]] = {}
    for stage in pipeline.stages:
        if stage.runs_agent and stage.role:
            roles.setdefault(stage.role, []).append(stage.name)
    return roles


def _check_agents(settings: Settings, pipeline: Pipeline, env: dict[str, str],
                  add: Add) -> None:
    for role, stages in needed_roles(settings, pipeline).items():
        add(agent_check(settings, role, stages, env))
    for stage in pipeline.stages:
        if stage.runner == "command" and stage.command:
            add(_program_check(f"stage {stage.name}", stage.command[0], env,
                               f"the {stage.name} stage's command"))


def agent_check(settings: Settings, role_name: str, stages: list[str],
                env: Mapping[str, str]) -> Check:
    """fail when the agent's program is not on PATH; warn when its output reports no cost."""
    name = f"agent {role_name}"
    role = settings.agents.get(role_name)
    if role is None:
        return Check(name, FAIL, f"not defined under agents: (stages {', '.join(stages)})")
    role_env = {**env, **role.env}
    found = which(role.command[0], role_env)
    if found is None:
        return Check(name, FAIL, f"{role.command[0]!r} not found on PATH (stages "
                     f"{', '.join(stages)})")
    if role.output != "claude-json":
        return Check(name, WARN, f"{found}: output {role.output or 'plain text'} reports no "
                     "cost, so budgets don't limit this agent")
    return Check(name, OK, found)


def _program_check(name: str, program: str, env: Mapping[str, str], what: str) -> Check:
    found = which(program, env)
    if found is None:
        return Check(name, FAIL, f"{program!r} not found on PATH ({what})")
    return Check(name, OK, found)


def _check_tests(settings: Settings, pipeline: Pipeline, env: dict[str, str],
                 add: Add) -> None:
    """The test command of each repo, when the pipeline runs the test-runner."""
    if not any(stage.job_runner == "test-runner" for stage in pipeline.stages):
        return
    for repo in settings.repos.values():
        add(check_test_command(repo, env))


def check_test_command(repo: RepoConfig, env: dict[str, str]) -> Check:
    """The test command as a task's worktree will run it (orch.testenv).

    Its program must be on PATH; for a pytest command, its interpreter must import
    pytest and the package under test must resolve inside the worktree, not in
    the main checkout (an editable install) or site-packages. The check runs in
    a copy of the default branch's files made in a temporary folder, which
    stands in for a task's worktree; the repository is not touched.
    """
    name = f"test {repo.name}"
    unchecked = Check(name, WARN, f"{shlex.join(repo.test.command)}: not checked further "
                      f"until repo {repo.name} is fixed (above)")
    if repo_problem(repo) is not None:
        return _test_program_check(name, repo, repo.test.command, env) or unchecked
    with tempfile.TemporaryDirectory(prefix="orch-doctor-") as scratch:
        probe_dir = Path(scratch) / "worktree"
        try:
            gitops.export_tree(repo.path, repo.default_branch, probe_dir)
        except OrchError:  # the repo check says why (no such default branch, say)
            return _test_program_check(name, repo, repo.test.command, env) or unchecked
        return _probe_test_command(name, repo, probe_dir, env)


def _test_program_check(name: str, repo: RepoConfig, command: tuple[str, ...],
                        env: dict[str, str]) -> Check | None:
    """fail when the test command's program is not on PATH (None when it is)."""
    if which(command[0], env) is None:
        return Check(name, FAIL, f"{command[0]!r} not found on PATH: the testing stage would "
                     f"DEFER (set repos.{repo.name}.test.command)")
    return None


def _probe_test_command(name: str, repo: RepoConfig, probe_dir: Path,
                        env: dict[str, str]) -> Check:
    command = testenv.render(repo.test.command, probe_dir)
    run_env = {**env, **testenv.render(repo.test.env, probe_dir)}
    missing = _test_program_check(name, repo, command, run_env)
    if missing is not None:
        return missing
    shown = shlex.join(repo.test.command)
    package = testenv.package_under_test(probe_dir)
    argv = testenv.probe_argv(command, package.name if package else None, run_env)
    if argv is None:
        return Check(name, OK, f"{shown} (not pytest: orch cannot look inside it; "
                     f"`orch test-run {shlex.quote(str(repo.path))}` tries it)")
    timeout = UV_PROBE_TIMEOUT_S if "uv" in (Path(a).name for a in argv[:1]) else \
        PROBE_TIMEOUT_S
    run = run_in_group(argv, cwd=probe_dir, env=run_env, timeout_s=timeout, grace_s=1.0)
    found = testenv.parse_probe(run.output_tail)
    if found is None:
        why = run.start_error or (f"no answer in {timeout:g} s" if run.timed_out else
                                  _last_line(run.stderr_tail) or f"exit {run.exit_code}")
        return Check(name, FAIL, f"{shown}: its interpreter could not run orch's check: {why}")
    return _judge_probe(name, repo, shown, found, package, probe_dir)


def _judge_probe(name: str, repo: RepoConfig, shown: str, found: dict[str, Any],
                 package: testenv.Package | None, probe_dir: Path) -> Check:
    python = str(found.get("python") or "its python")
    if "pytest_error" in found:
        layout = testenv.detect(repo.path).layout
        return Check(name, FAIL, f"{python} cannot import pytest: {found['pytest_error']}; "
                     f"the tests need it where they run: {testenv.install_hint(layout, python)}")
    detail = f"{shown}: pytest {found.get('pytest')} in {python}"
    if package is None:
        return Check(name, OK, f"{detail} (no package to check)")
    origin = found.get("origin")
    where = f"{package.root}/{package.name}" if package.root else package.name
    fix = (f"set `env: {{PYTHONPATH: \"{{worktree}}{'/' + package.root if package.root else ''}"
           f"\"}}` under repos.{repo.name}.test")
    if not origin:
        return Check(name, FAIL, f"package {package.name} does not import from a worktree "
                     f"({found.get('origin_error') or 'not found'}): {fix}")
    if not _inside(Path(str(origin)), probe_dir):
        return Check(name, FAIL, f"package {package.name} resolves to {origin}, "
                     f"{_whose(Path(str(origin)), repo)}, not to the worktree's {where}: the "
                     f"tests would test that code instead; {fix}")
    return Check(name, OK, f"{detail}; package {package.name} resolves in the worktree "
                 f"({where})")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _whose(path: Path, repo: RepoConfig) -> str:
    if _inside(path, repo.path):
        return "the main checkout (an editable install)"
    return "an installed copy"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# --- staging channels --------------------------------------------------------------


def _check_staging(settings: Settings, pipeline: Pipeline, env: dict[str, str],
                   add: Add) -> None:
    if not any(stage.runner == "staging-runner" for stage in pipeline.stages):
        return
    for repo in settings.repos.values():
        if repo.staging is not None:
            add(staging_check(repo, settings.flags.staging_runner_exec_host_side, env))


def ssh_probe_argv(host: str, options: tuple[str, ...] = ()) -> list[str]:
    """`ssh -o BatchMode=yes -o ConnectTimeout=10 [SSH_OPTIONS...] HOST true`."""
    from orch.runners.staging import SSH_OPTIONS

    return ["ssh", *SSH_OPTIONS, *options, host, "true"]


def staging_check(repo: RepoConfig, exec_host_side: bool, env: dict[str, str]) -> Check:
    """The staging channel: `ssh HOST true` works, or docker is here when there is no host."""
    from orch.runners.staging import explain_staging_outcome

    staging = repo.staging
    assert staging is not None
    name = f"staging {repo.name}"
    if not (staging.host and exec_host_side):
        return _program_check(name, "docker", env,
                              f"staging runs `docker exec {staging.container}` here")
    run = run_in_group(ssh_probe_argv(staging.host, staging.ssh_options), cwd=Path("/"), env=env,
                       timeout_s=PROBE_TIMEOUT_S, grace_s=1.0)
    if run.exit_code == 0 and not run.timed_out:
        return Check(name, OK, f"ssh {staging.host}: reachable")
    outcome, reason = explain_staging_outcome(run.exit_code, run.stderr_tail,
                                              timed_out=run.timed_out,
                                              start_error=run.start_error)
    if run.timed_out:
        reason = f"no answer in {PROBE_TIMEOUT_S:g} s"
    return Check(name, FAIL, f"ssh {staging.host}: {outcome}: {reason}")
