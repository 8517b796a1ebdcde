"""Loading a pipeline file into the stage machine (SPEC section 3).

The file is YAML: an ordered list of stages. Each entry is checked key by
key against the settings (an unknown runner, gate, role or on_fail target is
a config error naming the file, the key path and the line), and becomes an
`orch.machine.Stage` with its effective runner and role: the one place where
the `test_runner_enabled` flag turns a test-runner stage into the tester agent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orch.config import Settings
from orch.errors import ConfigError
from orch.machine import Pipeline, Stage
from orch.model import DEFAULT_GATE, GATES, RUNNERS, TERMINAL_STAGES
from orch.yamlio import KeyPath, dotted, load_yaml_file

STAGE_KEYS = ("name", "runner", "role", "gate", "on_fail", "questions", "deliverables", "command")


def default_pipeline_path() -> Path:
    return Path(__file__).parent / "data" / "pipeline.yaml"


def load_pipeline(settings: Settings) -> Pipeline:
    """Load and validate the pipeline named by `settings.pipeline`."""
    if settings.pipeline == "default":
        path = default_pipeline_path()
    else:
        path = Path(settings.pipeline).expanduser()
        if not path.is_absolute():
            path = settings.home / path
    if not path.exists():
        raise ConfigError(str(settings.config_file), "pipeline", f"no pipeline file at {path}")
    data, marks = load_yaml_file(path)
    return _validate(data, marks, str(path), settings)


def _validate(data: Any, marks: dict[KeyPath, int], file: str, settings: Settings) -> Pipeline:
    def fail(path: KeyPath, message: str) -> ConfigError:
        line = next((marks[path[:cut]] for cut in range(len(path), -1, -1)
                     if path[:cut] in marks), None)
        return ConfigError(file, dotted(path), message, line=line)

    if not isinstance(data, dict) or not isinstance(data.get("stages"), list) \
            or not data["stages"]:
        raise fail(("stages",), "expected a non-empty list of stages")
    extra = [key for key in data if key != "stages"]
    if extra:
        raise fail((extra[0],), "unknown key")
    stages: list[Stage] = []
    for index, raw in enumerate(data["stages"]):
        stages.append(_stage(raw, ("stages", index), fail, settings))
    names = [stage.name for stage in stages]
    for index, stage in enumerate(stages):
        if stage.name in names[:index]:  # name the second one, where the mistake is
            raise fail(("stages", index, "name"), f"duplicate stage name {stage.name!r}")
        if stage.on_fail is not None and stage.on_fail not in names:
            raise fail(("stages", index, "on_fail"),
                       f"unknown on_fail target {stage.on_fail!r} (stages: {', '.join(names)})")
    return Pipeline(tuple(stages), file)


def _stage(raw: Any, path: KeyPath, fail: Any, settings: Settings) -> Stage:
    """One stage entry, checked key by key; errors carry the entry's line."""
    if not isinstance(raw, dict):
        raise fail(path, "expected a mapping")
    for key in raw:
        if key not in STAGE_KEYS:
            raise fail((*path, key), "unknown key")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise fail((*path, "name"), "expected a stage name")
    if name in TERMINAL_STAGES:
        raise fail((*path, "name"), f"{name!r} is a terminal stage name")
    runner = raw.get("runner")
    if runner not in RUNNERS:
        raise fail((*path, "runner"), f"unknown runner {runner!r} (known: {', '.join(RUNNERS)})")
    gate = raw.get("gate", DEFAULT_GATE.get(runner))
    if gate is None:
        raise fail((*path, "gate"), "gate is required for agent stages")
    if gate not in GATES:
        raise fail((*path, "gate"), f"unknown gate {gate!r} (known: {', '.join(GATES)})")
    role = _role(raw, runner, path, fail, settings)
    return Stage(name=name, runner=runner, gate=gate, role=role,
                 job_runner=_job_runner(runner, settings),
                 **_stage_lists(raw, runner, path, fail))


def _job_runner(runner: str, settings: Settings) -> str:
    """The runner a stage's jobs use: the tester agent when the test-runner is off."""
    if runner == "test-runner" and not settings.flags.test_runner_enabled:
        return "agent"
    return runner


def _role(raw: dict, runner: str, path: KeyPath, fail: Any, settings: Settings) -> str | None:
    """The agent a stage needs (the tester when the test-runner is off); it must exist."""
    role = raw.get("role")
    needed = role if runner == "agent" else None
    if runner == "agent" and not role:
        raise fail((*path, "role"), "role is required for agent stages")
    if runner == "test-runner" and not settings.flags.test_runner_enabled:
        needed = role or "tester"
    if needed and needed not in settings.agents:
        raise fail((*path, "role"),
                   f"stage needs agent {needed!r}, which agents: in "
                   f"{settings.config_file} does not define")
    return role or needed


def _stage_lists(raw: dict, runner: str, path: KeyPath, fail: Any) -> dict[str, Any]:
    command = raw.get("command") or []
    if runner == "command" and (not isinstance(command, list) or not command):
        raise fail((*path, "command"), "a command stage needs a non-empty argv list")
    if not isinstance(command, list):
        raise fail((*path, "command"), "expected an argv list")
    for index, item in enumerate(command):
        if not isinstance(item, str):  # YAML `true` or `1` would run as "True" / "1"
            raise fail((*path, "command", index), f"expected a string, got {item!r} "
                       "(quote it)")
    deliverables = raw.get("deliverables") or []
    if not isinstance(deliverables, list) or not all(isinstance(d, str) for d in deliverables):
        raise fail((*path, "deliverables"), "expected a list of file names")
    questions = raw.get("questions", False)
    if not isinstance(questions, bool):
        raise fail((*path, "questions"), "expected true or false")
    on_fail = raw.get("on_fail")
    if on_fail is not None and not isinstance(on_fail, str):
        raise fail((*path, "on_fail"), "expected a stage name")
    return {"on_fail": on_fail, "questions": questions, "deliverables": tuple(deliverables),
            "command": tuple(str(c) for c in command)}
