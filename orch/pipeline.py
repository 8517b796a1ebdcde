"""The stage machine as data (SPEC section 3).

A pipeline is an ordered list of stages loaded from YAML and validated against
the settings. `next_move` maps (stage, verdict, round) to where the task goes;
it is pure and touches neither files nor the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orch.config import Settings
from orch.errors import ConfigError
from orch.model import DEFAULT_GATE, GATES, RUNNERS, TERMINAL_STAGES, Verdict
from orch.yamlio import KeyPath, dotted, load_yaml_file

STAGE_KEYS = ("name", "runner", "role", "gate", "on_fail", "questions", "deliverables", "command")


@dataclass(frozen=True)
class Stage:
    name: str
    runner: str
    gate: str
    role: str | None = None
    on_fail: str | None = None
    questions: bool = False
    deliverables: tuple[str, ...] = ()
    command: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "runner": self.runner, "role": self.role,
                "gate": self.gate, "on_fail": self.on_fail, "questions": self.questions,
                "deliverables": list(self.deliverables), "command": list(self.command)}


@dataclass(frozen=True)
class Move:
    """Where a verdict sends a task: a stage (or terminal stage) and its round."""

    stage: str
    round: int
    verdict: Verdict
    same_job: bool  # RETRY / DEFER: the same job row runs again


@dataclass(frozen=True)
class Pipeline:
    stages: tuple[Stage, ...]
    source: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(stage.name for stage in self.stages)

    @property
    def first(self) -> Stage:
        return self.stages[0]

    def get(self, name: str) -> Stage | None:
        for stage in self.stages:
            if stage.name == name:
                return stage
        return None

    def after(self, name: str) -> str:
        """The stage after `name`, or `done` after the last."""
        names = self.names
        index = names.index(name)
        return names[index + 1] if index + 1 < len(names) else "done"

    def next_move(self, stage_name: str, verdict: Verdict, round_: int, max_rounds: int) -> Move:
        """Apply a verdict: PASS forward, FAIL to on_fail (or RETRY without one), else stay."""
        stage = self.get(stage_name)
        if stage is None:
            raise KeyError(stage_name)
        if verdict is Verdict.PASS:
            return Move(self.after(stage_name), round_, verdict, same_job=False)
        if verdict is Verdict.FAIL:
            if stage.on_fail is None:
                return Move(stage_name, round_, Verdict.RETRY, same_job=True)
            if round_ + 1 > max_rounds:
                return Move("failed", round_ + 1, verdict, same_job=False)
            return Move(stage.on_fail, round_ + 1, verdict, same_job=False)
        same = verdict in (Verdict.RETRY, Verdict.DEFER)
        return Move(stage_name, round_, verdict, same_job=same)

    def to_mermaid(self) -> str:
        lines = ["stateDiagram-v2", f"    [*] --> {self.first.name}"]
        for stage in self.stages:
            lines.append(f"    {stage.name} --> {self.after(stage.name)}: PASS")
            if stage.on_fail:
                lines.append(f"    {stage.name} --> {stage.on_fail}: FAIL (round + 1)")
                lines.append(f"    {stage.name} --> failed: FAIL past max_rounds")
        lines.append("    done --> [*]")
        return "\n".join(lines)


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
    return Stage(name=name, runner=runner, gate=gate, role=role, **_stage_lists(raw, runner,
                                                                                 path, fail))


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
