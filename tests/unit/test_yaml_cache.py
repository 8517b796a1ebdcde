"""The YAML cache (orch.yamlio, used by orch.cli.context.AppContext): orch.yaml and the
pipeline are read from the cache while unchanged, and every change or doubt reads the YAML."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from orch import yamlio
from orch.cli.context import YAML_CACHE_FILE, AppContext
from orch.errors import ConfigError


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files just written count as settled (the cache waits a few seconds otherwise)."""
    monkeypatch.setattr(yamlio, "RACY_NS", -10**12)


def load(home: Path) -> AppContext:
    ctx = AppContext(home_option=str(home))
    assert ctx.settings is not None and ctx.pipeline is not None
    return ctx


def test_a_second_command_reads_settings_and_pipeline_without_yaml(
        orch_home: Path, settled: None, clean_env: None) -> None:
    load(orch_home)
    cached = json.loads((orch_home / YAML_CACHE_FILE).read_text(encoding="utf-8"))
    assert str(orch_home / "orch.yaml") in cached["files"]
    assert any(name.endswith("pipeline.yaml") for name in cached["files"])
    probe = ("import sys; from orch.cli.context import AppContext; "
             f"ctx = AppContext(home_option={str(orch_home)!r}); "
             "print(ctx.settings.repos['app'].max_active, len(ctx.pipeline.stages), "
             "'yaml' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True)
    fresh = load(orch_home)
    assert done.stdout.split() == [str(fresh.settings.repos["app"].max_active),
                                   str(len(fresh.pipeline.stages)), "False"]


def test_an_edit_of_the_same_size_is_seen(orch_home: Path, settled: None,
                                          clean_env: None) -> None:
    assert load(orch_home).settings.max_concurrency == 1
    config = orch_home / "orch.yaml"
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("max_concurrency: 1 ", "max_concurrency: 7 ", 1),
                      encoding="utf-8")
    assert config.stat().st_size == len(text.encode())
    assert load(orch_home).settings.max_concurrency == 7


def test_a_fresh_file_is_not_cached(orch_home: Path, clean_env: None) -> None:
    (orch_home / "orch.yaml").write_text("max_concurrency: 2\n", encoding="utf-8")
    load(orch_home)
    cached = orch_home / YAML_CACHE_FILE
    files = json.loads(cached.read_text())["files"] if cached.exists() else {}
    assert str(orch_home / "orch.yaml") not in files


def test_a_broken_cache_is_ignored_and_replaced(orch_home: Path, settled: None,
                                                clean_env: None) -> None:
    (orch_home / YAML_CACHE_FILE).write_text("{not json", encoding="utf-8")
    assert load(orch_home).settings.repos["app"].max_active == 1
    assert json.loads((orch_home / YAML_CACHE_FILE).read_text(encoding="utf-8"))["files"]


def test_config_errors_from_the_cache_keep_their_line(orch_home: Path, settled: None,
                                                      clean_env: None) -> None:
    config = orch_home / "orch.yaml"
    config.write_text("max_attempts: 3\nmax_concurrency: -1\n", encoding="utf-8")
    messages = []
    for _ in range(2):  # parsed, then from the cache
        with pytest.raises(ConfigError) as caught:
            load(orch_home)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and ":2" in messages[0]


def test_values_json_cannot_keep_are_not_cached(tmp_path: Path, settled: None) -> None:
    doc = tmp_path / "doc.yaml"
    doc.write_text("when: 2024-01-01\nhow_many: .inf\n", encoding="utf-8")
    cache = tmp_path / "cache.json"
    with yamlio.caching(cache):
        data, marks = yamlio.load_yaml_file(doc)
        again, _ = yamlio.load_yaml_file(doc)
    assert str(data["when"]) == "2024-01-01" and again == data and marks[("when",)] == 1
    assert not cache.exists()


def test_without_the_cache_context_nothing_is_written(tmp_path: Path, settled: None) -> None:
    doc = tmp_path / "doc.yaml"
    doc.write_text("a: [1, 2]\n", encoding="utf-8")
    assert yamlio.load_yaml_file(doc)[0] == {"a": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.yaml"]
