"""An agent run's plan: everything its supervisor needs, decided by the tick.

The tick that claims an agent job renders the prompt, fills the argv,
builds the environment and hands all of it, with the bounds the supervisor
keeps (timeout, heartbeat, grace), to the detached supervisor on its stdin
as one JSON object. The supervisor then reads no configuration and no
pipeline of its own: it runs exactly what the tick decided.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from orch.config import RepoConfig
from orch.engine.context import Engine
from orch.state import events
from orch.state.records import Job, Run, Task


@dataclass(frozen=True)
class AgentPlan:
    job_id: int
    run_id: int
    argv: list[str]
    env: dict[str, str]
    cwd: str
    timeout_s: float
    stdin: str | None           # the prompt, for a role with `stdin: prompt`
    output: str | None          # claude-json, codex-jsonl or None
    heartbeat_interval_s: int
    cancel_grace_s: int
    state: str                  # where the state lives (the SQLite file or the PostgreSQL URL)
    mark: str = ""              # the run's ORCH_RUN_MARK (docs/processes.md)
    log_max_mb: int = 100       # the run's log keeps its head and tail past this size
    home: str = ""              # the home, for the kick when the run ends
    kick: bool = False          # flags.kick_enabled
    log_path: str = ""          # the run's log (its tail is stored when it ends, SPEC 11)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @staticmethod
    def from_json(text: str) -> AgentPlan:
        data = json.loads(text)
        return AgentPlan(**data)


def shell_test_command(repo: RepoConfig, worktree: Path) -> str:
    """The repo's test command as one shell line for a prompt: its `test.env` as leading
    assignments, `{worktree}` filled, the target appended (what the testing stage runs)."""
    import shlex

    from orch.testenv import render

    env = render(repo.test.env, worktree)
    argv = [*render(repo.test.command, worktree), *([repo.test.target] if repo.test.target
                                                    else [])]
    return " ".join([*(f"{key}={shlex.quote(value)}" for key, value in env.items()),
                     shlex.join(argv)])


def build_plan(engine: Engine, task: Task, job: Job, run: Run) -> AgentPlan:
    """Render the prompt (also written next to the log as `.prompt.md`) and the argv."""

    from orch.agents import render_argv, run_environment, run_vars
    from orch.prompts import load_prompt_template, prompt_context, render_prompt

    stage = engine.pipeline.get(job.stage)
    if stage is None or not stage.role:
        raise RuntimeError(f"stage {job.stage!r} has no agent role in the pipeline")
    role = engine.settings.agents[stage.role]
    repo = engine.settings.repo(task.repo)
    home = engine.home
    reject = events.latest_for_task(engine.db, task.id, ("rejected",))
    worktree = home.worktree(task.repo, task.id)
    context = prompt_context(
        task_id=task.id, repo=task.repo, stage=job.stage, round_no=task.round,
        artifacts=home.artifacts(task.id), worktree=worktree,
        branch=task.branch or "", default_branch=repo.default_branch, role=stage.role,
        reject_reason=reject.detail if reject else None,
        test_command=shell_test_command(repo, worktree))
    prompt = render_prompt(load_prompt_template(stage.role, home.prompts), context)
    prompt_file = Path(run.log_path or home.log(job.id, run.id)).with_suffix(".prompt.md")
    prompt_file.write_text(prompt, encoding="utf-8")
    argv = render_argv(role.command, {**context, **_git_dirs(role.command, home.worktree(
        task.repo, task.id)), "prompt": prompt, "prompt_file": str(prompt_file)})
    from orch.procs.marks import marked_env

    mark = home.run_mark(run.id)
    env = marked_env(run_environment(engine.settings, run_vars(
        home, task_id=task.id, repo=task.repo, stage=job.stage, round_no=task.round,
        job_id=job.id, run_id=run.id), dict(role.env)), mark)
    return AgentPlan(
        job_id=job.id, run_id=run.id, argv=argv, env=env,
        cwd=str(home.worktree(task.repo, task.id)), timeout_s=float(role.timeout_s),
        stdin=prompt if role.stdin == "prompt" else None, output=role.output,
        heartbeat_interval_s=engine.settings.heartbeat_interval_s,
        cancel_grace_s=engine.settings.cancel_grace_s, state=engine.settings.state_location,
        mark=mark, log_max_mb=engine.settings.log_max_mb,
        home=str(home.root), kick=engine.settings.flags.kick_enabled,
        log_path=run.log_path or str(home.log(job.id, run.id)))


def _git_dirs(command: tuple[str, ...] | list[str], worktree: Path) -> dict[str, str]:
    """{git_dir} and {git_common_dir} of the task's worktree, asked of git only when the
    role's argv uses them (a sandboxed agent needs them writable to commit)."""
    if not any("{git_" in element for element in command):
        return {}
    from orch import gitops

    git_dir, common = gitops.git_dirs(worktree)
    return {"git_dir": str(git_dir), "git_common_dir": str(common)}
