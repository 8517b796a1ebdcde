"""Configuration loaded directly (orch.config, SPEC section 2): keys, the environment,
the home, the defaults, the shipped file, and the frozen records settings are made of.
How a mistake reaches the user through the CLI is in tests/cli/test_cli_config.py."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from support.checkout import CHECKOUT
from support.config import write_config

from orch.config import (
    DEFAULT_AGENTS,
    FALSE_WORDS,
    SCALARS,
    TOP_KEYS,
    TRUE_WORDS,
    Flags,
    load_settings,
    resolve_home,
)
from orch.errors import ConfigError
from orch.frozen import frozen_record
from orch.pipeline import load_pipeline

# ---------------------------------------------------------------- unknown keys

@hyp_settings(max_examples=40, deadline=None)
@given(st.from_regex(r"[a-z][a-z_]{0,20}", fullmatch=True).filter(lambda k: k not in TOP_KEYS))
def test_any_unknown_top_level_key_names_itself_and_its_line(key: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / "orch.yaml").write_text(f"max_rounds: 1\n\n{key}: 1\n", encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_settings(home, environ={})
    assert info.value.key == key
    assert info.value.line == 3
    assert info.value.exit_code == 4


# ---------------------------------------------------------------- the environment

def test_environment_overrides_scalars_and_flags(orch_home: Path) -> None:
    write_config(orch_home, "max_concurrency: 1\nflags:\n  serial_gate_enabled: true\n")
    settings = load_settings(orch_home, environ={
        "ORCH_MAX_CONCURRENCY": "2", "ORCH_SERIAL_GATE_ENABLED": "false",
        "ORCH_RETRY_BACKOFF_S": " 0 ", "ORCH_PIPELINE": "default"})
    assert settings.max_concurrency == 2
    assert settings.retry_backoff_s == 0
    assert settings.flags.serial_gate_enabled is False
    assert settings.pipeline == "default"
    assert load_settings(orch_home, environ={}).max_concurrency == 1


def test_os_environ_is_read_when_no_mapping_is_given(
        orch_home: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> None:
    monkeypatch.setenv("ORCH_MAX_CONCURRENCY", "2")
    assert load_settings(orch_home).max_concurrency == 2


@pytest.mark.parametrize("word", [*TRUE_WORDS, "TRUE", "Yes", " on "])
def test_true_words(word: str, orch_home: Path) -> None:
    write_config(orch_home, "flags:\n  impossible_queued_sanitize_enabled: false\n")
    settings = load_settings(orch_home,
                             environ={"ORCH_IMPOSSIBLE_QUEUED_SANITIZE_ENABLED": word})
    assert settings.flags.impossible_queued_sanitize_enabled is True


@pytest.mark.parametrize("word", [*FALSE_WORDS, "False", "OFF", "No "])
def test_false_words(word: str, orch_home: Path) -> None:
    settings = load_settings(orch_home,
                             environ={"ORCH_IMPOSSIBLE_QUEUED_SANITIZE_ENABLED": word})
    assert settings.flags.impossible_queued_sanitize_enabled is False
    assert settings.flags.serial_gate_enabled is True


# ---------------------------------------------------------------- the home

def test_home_resolution_order(tmp_path: Path) -> None:
    env = {"ORCH_HOME": str(tmp_path / "env-home"), "XDG_STATE_HOME": str(tmp_path / "xdg")}
    assert resolve_home(str(tmp_path / "opt"), env) == tmp_path / "opt"
    assert resolve_home(None, env) == tmp_path / "env-home"
    assert resolve_home(None, {"XDG_STATE_HOME": str(tmp_path / "xdg")}) == \
        tmp_path / "xdg" / "orch"
    assert resolve_home(None, {}) == Path.home() / ".local" / "state" / "orch"


# ---------------------------------------------------------------- defaults and shipped files

def test_defaults_when_orch_yaml_is_absent(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "no-home", environ={})
    for key, (_, _, default) in SCALARS.items():
        expected = None if key == "env_file" else default
        assert getattr(settings, key) == expected, key
    assert settings.flags == Flags()
    assert settings.notify is None
    assert set(settings.agents) == set(DEFAULT_AGENTS)
    assert dict(settings.repos) == {}
    assert settings.budget.task_usd is None
    assert [stage.name for stage in load_pipeline(settings).stages] == [
        "analysis", "development", "review", "testing", "staging", "merge"]


def test_shipped_config_loads_clean_and_matches_the_packaged_copy(tmp_path: Path) -> None:
    shipped = CHECKOUT / "config" / "orch.yaml"
    packaged = CHECKOUT / "orch" / "data" / "orch.yaml"
    assert shipped.read_bytes() == packaged.read_bytes()
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(shipped, home / "orch.yaml")
    settings = load_settings(home, environ={})
    assert settings.max_concurrency == 1
    assert settings.heartbeat_timeout_s == 60
    assert settings.flags == Flags()
    assert (settings.budget.task_usd, settings.budget.day_usd) == (20, 200)
    assert {"analyst", "developer", "reviewer"} <= set(settings.agents)
    assert settings.agents["analyst"].output == "claude-json"
    assert load_pipeline(settings).first.name == "analysis"


# ---------------------------------------------------------------- frozen records


@dataclasses.dataclass(frozen=True)
class Reference:
    name: str
    size: int = 3
    tags: tuple[str, ...] = ()
    extra: dict[str, str] = dataclasses.field(default_factory=dict)


@frozen_record
class Record:
    name: str
    size: int = 3
    tags: tuple[str, ...] = ()
    extra: dict[str, str] = dataclasses.field(default_factory=dict)


def test_a_frozen_record_behaves_like_a_frozen_dataclass() -> None:
    for cls in (Reference, Record):
        one, same, other = cls("a", 4), cls(name="a", size=4), cls("b")
        assert repr(one) == f"{cls.__name__}(name='a', size=4, tags=(), extra={{}})"
        assert one == same and one != other and one != ("a", 4, (), {})
        assert one.extra is not cls("a").extra  # a fresh default each time
        assert dataclasses.replace(one, size=9).size == 9
        assert dataclasses.asdict(other) == {"name": "b", "size": 3, "tags": (), "extra": {}}
        assert [f.name for f in dataclasses.fields(cls)] == ["name", "size", "tags", "extra"]
        with pytest.raises(dataclasses.FrozenInstanceError):
            one.size = 5  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            del one.name  # type: ignore[misc]
        for args, kwargs in (((), {}), (("a", 1, (), {}, 5), {}), (("a",), {"name": "b"}),
                             ((), {"name": "a", "colour": "red"})):
            with pytest.raises(TypeError):
                cls(*args, **kwargs)
    hashable = Record("a", tags=("x",), extra=None)  # type: ignore[arg-type]
    assert hash(hashable) == hash(Record("a", tags=("x",), extra=None))  # type: ignore[arg-type]
