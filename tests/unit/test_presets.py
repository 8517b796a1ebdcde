"""The agent presets `orch init --agents` writes (SPEC section 2, 5; docs/agents.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from orch.agents import PLACEHOLDERS, render_argv
from orch.config import AGENT_PRESETS, DEFAULT_AGENTS, load_settings
from orch.engine.commands.init import agents_yaml, init_home, packaged_config_text, render_config
from orch.errors import UsageError


def test_the_packaged_config_holds_the_claude_presets_exactly() -> None:
    data = yaml.safe_load(packaged_config_text())
    assert data["agents"] == DEFAULT_AGENTS == AGENT_PRESETS["claude"]
    assert render_config([]) == packaged_config_text()


@pytest.mark.parametrize("kind", ["claude", "codex", "aider"])
def test_init_writes_the_chosen_presets(tmp_path: Path, kind: str) -> None:
    init_home(tmp_path / "home", [], kind)
    settings = load_settings(tmp_path / "home", {})
    expected = {role: spec["command"] for role, spec in AGENT_PRESETS[kind].items()}
    import sys
    got = {role: [e.replace(sys.executable, "{python}") for e in agent.command]
           for role, agent in settings.agents.items()}
    assert got == expected
    assert {role: agent.output for role, agent in settings.agents.items()} == {
        role: spec["output"] for role, spec in AGENT_PRESETS[kind].items()}


def test_aider_is_offered_for_the_developer_only() -> None:
    roles = AGENT_PRESETS["aider"]
    assert "aider" in roles["developer"]["command"]
    assert all("aider" not in roles[r]["command"] for r in ("analyst", "reviewer", "tester"))


def test_an_unknown_kind_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="claude, codex, aider"):
        init_home(tmp_path / "home", [], "cursor")
    assert not (tmp_path / "home").exists()


def test_every_preset_placeholder_is_known() -> None:
    for kind, roles in AGENT_PRESETS.items():
        for role, spec in roles.items():
            values = {name: f"<{name}>" for name in PLACEHOLDERS}
            argv = render_argv([e.replace("{python}", "py") for e in spec["command"]], values)
            assert not any("{" in element for element in argv), (kind, role, argv)


def test_claude_presets_keep_the_prompt_after_a_double_dash() -> None:
    """--add-dir and --allowedTools take several values: the prompt must follow `--`."""
    for spec in AGENT_PRESETS["claude"].values():
        assert spec["command"][-2:] == ["--", "{prompt}"]
        assert "--add-dir={artifacts}" in spec["command"]


def test_agents_yaml_is_valid_yaml_for_every_kind() -> None:
    for kind in AGENT_PRESETS:
        parsed = yaml.safe_load("agents:\n" + agents_yaml(kind, "/opt/py"))
        assert set(parsed["agents"]) == {"analyst", "developer", "reviewer", "tester"}
