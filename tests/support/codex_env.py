"""Running the real Codex CLI (npm @openai/codex, pinned in tests/realcli) in isolation.

Shared by the real-CLI tests and the corpus capture script: where the binary is,
the `$CODEX_HOME/config.toml` that points Codex at a stand-in provider, a task
laid out as orch lays it out (a main repository, a `git worktree` for the task,
an artifacts folder outside both), and the argv presets found to work under
Codex's own sandbox.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REALCLI = ROOT / "tests" / "realcli"
INSTALL_HINT = "npm ci --prefix tests/realcli"

GIT_ENV = {
    "GIT_AUTHOR_NAME": "orch tests", "GIT_AUTHOR_EMAIL": "tests@orch.invalid",
    "GIT_COMMITTER_NAME": "orch tests", "GIT_COMMITTER_EMAIL": "tests@orch.invalid",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
}

# Flags every role needs: the sandbox Codex enforces itself, no approval prompts (exec
# rejects escalations anyway), commands run with orch's PATH (a login shell would reset
# it from /etc/profile), an unreachable provider ends the run instead of retrying forever,
# and the artifacts folder (outside the worktree) is writable.
COMMON = ["codex", "exec", "--json", "-s", "workspace-write",
          "-c", 'approval_policy="never"', "-c", "allow_login_shell=false",
          "--disable", "unbounded_connection_retries", "--add-dir", "{artifacts}"]
# A commit in a worktree writes its private git dir (index, HEAD's reflog) and, in the
# main repository's git dir, objects, refs and logs; hooks and config stay read-only.
COMMIT_DIRS = ["--add-dir", "{git_dir}", "--add-dir", "{git_common_dir}/objects",
               "--add-dir", "{git_common_dir}/refs", "--add-dir", "{git_common_dir}/logs"]
# Without this the sandbox's seccomp filter refuses every AF_INET socket, loopback
# included, so a project whose tests open a local server cannot run them. It also opens
# the internet to the agent's commands: given only to the roles that run the tests.
NETWORK = ["-c", "sandbox_workspace_write.network_access=true"]
PRESETS = {
    "analyst": [*COMMON, "{prompt}"],
    "reviewer": [*COMMON, "{prompt}"],
    "tester": [*COMMON, *NETWORK, "{prompt}"],
    "developer": [*COMMON, *NETWORK, *COMMIT_DIRS, "{prompt}"],
}


def codex_bin() -> Path | None:
    """The pinned codex launcher installed by `npm ci --prefix tests/realcli`, if any."""
    path = REALCLI / "node_modules" / ".bin" / "codex"
    return path if path.exists() else None


def render(template: list[str], values: dict[str, str]) -> list[str]:
    """Replace `{name}` inside each argv element, never through a shell (as orch does)."""
    out = []
    for element in template:
        for name, value in values.items():
            element = element.replace("{" + name + "}", value)
        out.append(element)
    return out


def write_codex_home(home: Path, base_url: str, retries: int | None = 0,
                     sandbox_tmp: bool = False) -> Path:
    """Write `$CODEX_HOME/config.toml` naming the stand-in provider; return the home.

    A custom provider is used because Codex's built-in `openai` provider does not
    take `OPENAI_API_KEY` in exec mode (it wants `CODEX_API_KEY` or a login) and
    cannot be given retry settings. `retries` 0 makes failures take under a second;
    None keeps Codex's defaults (4 request retries, 5 stream retries). Unless
    `sandbox_tmp`, /tmp and $TMPDIR are taken out of the sandbox's writable roots,
    so that a test under /tmp proves what `--add-dir` grants.
    """
    home.mkdir(parents=True, exist_ok=True)
    lines = ['model_provider = "standin"', "", "[model_providers.standin]",
             'name = "standin"', f'base_url = "{base_url}"', 'env_key = "OPENAI_API_KEY"',
             'wire_api = "responses"', "supports_websockets = false"]
    if retries is not None:
        lines += [f"request_max_retries = {retries}", f"stream_max_retries = {retries}"]
    if not sandbox_tmp:
        lines += ["", "[sandbox_workspace_write]", "exclude_slash_tmp = true",
                  "exclude_tmpdir_env_var = true"]
    (home / "config.toml").write_text("\n".join(lines) + "\n")
    return home


def codex_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a codex run: ours, its home, a dummy key, a git identity."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GIT_", "CODEX_", "OPENAI_"))}
    # codex first, then this interpreter (as when orch runs from a virtualenv): the
    # presets keep PATH for the agent's commands, so `python3` there is this python.
    dirs = [str(REALCLI / "node_modules" / ".bin"), str(Path(sys.executable).parent)]
    env["PATH"] = os.pathsep.join([*dirs, env.get("PATH", "")])
    return env | GIT_ENV | {"CODEX_HOME": str(home), "OPENAI_API_KEY": "sk-dummy"} | extra


def git(cwd: Path, *args: str) -> str:
    """Run git with the tests' fixed identity; its stdout, stripped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | GIT_ENV
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@dataclass
class Task:
    """A task laid out as orch lays it out: repo, worktree on a branch, artifacts."""

    repo: Path
    worktree: Path
    artifacts: Path
    branch: str

    def values(self, prompt: str) -> dict[str, str]:
        """The placeholder values for a preset, including the two git dirs."""
        git_dir = git(self.worktree, "rev-parse", "--absolute-git-dir")
        common = git(self.worktree, "rev-parse", "--path-format=absolute", "--git-common-dir")
        return {"prompt": prompt, "artifacts": str(self.artifacts), "worktree": str(self.worktree),
                "git_dir": git_dir, "git_common_dir": common}

    def commits(self) -> int:
        """Commits on the task branch that the main branch does not have."""
        return int(git(self.repo, "rev-list", "--count", f"main..{self.branch}"))


def make_task(root: Path, files: dict[str, str] | None = None) -> Task:
    """A main repository with one commit, a worktree for task 1, an artifacts folder."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for name, text in (files or {"README.md": "demo\n"}).items():
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    worktree = root / "worktrees" / "task-1"
    git(repo, "worktree", "add", "-q", "-b", "orch/task-1", str(worktree))
    artifacts = root / "home" / "artifacts" / "task-1"
    artifacts.mkdir(parents=True)
    return Task(repo, worktree, artifacts, "orch/task-1")


@dataclass
class Run:
    """What one codex run left: its argv, exit code, output and duration."""

    argv: list[str]
    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False


def run_codex(argv: list[str], cwd: Path, env: dict[str, str], timeout: float) -> Run:
    """Run codex as orch does (own session, stdin /dev/null); SIGTERM its group at timeout."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        timed_out = True
    return Run(argv, proc.returncode, out, err, round(time.monotonic() - started, 2),
               timed_out)
