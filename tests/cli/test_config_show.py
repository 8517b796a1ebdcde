"""`orch config show [--json]`: every effective value with its source (default, a line of
orch.yaml, the ORCH_* variable), and ORCH_* names that set nothing reported as probable
typos there and by doctor, never as errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.cli import CliResult

from orch.config import FLAG_DEFAULTS, SCALARS

Cli = Callable[..., CliResult]


def show(cli: Cli, home: Path) -> dict[str, Any]:
    code, out, err = cli(home, "config", "show", "--json")
    assert code == 0, err
    return json.loads(out)


def line_of(home: Path, text: str) -> int:
    lines = (home / "orch.yaml").read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if line.startswith(text))


def test_every_value_with_its_source(orch_home: Path, cli: Cli,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_MAX_CONCURRENCY", "2")
    monkeypatch.setenv("ORCH_SERIAL_GATE_ENABLED", "off")
    report = show(cli, orch_home)
    assert set(report) == {"values", "warnings"} and report["warnings"] == []
    for entry in report["values"]:
        assert set(entry) == {"key", "value", "source"}
    values = {entry["key"]: entry for entry in report["values"]}
    assert values["max_concurrency"] == {"key": "max_concurrency", "value": 2,
                                         "source": "ORCH_MAX_CONCURRENCY"}
    assert values["flags.serial_gate_enabled"]["value"] is False
    assert values["flags.serial_gate_enabled"]["source"] == "ORCH_SERIAL_GATE_ENABLED"
    assert values["max_attempts"] == {"key": "max_attempts", "value": 3,
                                      "source": f"orch.yaml:{line_of(orch_home, 'max_attempts')}"}
    assert values["repos.app.path"]["source"] == \
        f"orch.yaml:{line_of(orch_home, '    path:')}"
    assert values["repos.app.test.timeout_s"] == {"key": "repos.app.test.timeout_s",
                                                  "value": 900, "source": "default"}
    assert values["agents.developer.env"]["source"] == "default"
    assert values["budget.task_usd"]["value"] == 20
    # every top-level scalar and flag is there
    assert set(SCALARS) | {f"flags.{name}" for name in FLAG_DEFAULTS} <= set(values)


def test_a_home_without_orch_yaml_shows_the_defaults(tmp_path: Path, cli: Cli) -> None:
    home = tmp_path / "home"
    assert cli(home, "init")[0] == 0
    (home / "orch.yaml").unlink()
    values = {v["key"]: v for v in show(cli, home)["values"]}
    assert values["max_concurrency"]["source"] == "default"
    assert values["agents.analyst.command"]["source"] == "default"


def test_unknown_orch_variables_are_probable_typos(orch_home: Path, cli: Cli,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_MAX_CONCURENCY", "3")          # a typo
    monkeypatch.setenv("ORCH_BUDGET_DAY_USD", "5")          # a nested key: not settable
    for known in ("ORCH_TASK_ID", "ORCH_WORKTREE", "ORCH_BIN", "ORCH_PATH", "ORCH_RUN_MARK"):
        monkeypatch.setenv(known, "1")
    report = show(cli, orch_home)
    assert report["warnings"] == [
        "ORCH_BUDGET_DAY_USD is ignored: budget cannot be set from the environment (only "
        "top-level values and flags can); set it in orch.yaml",
        "ORCH_MAX_CONCURENCY is ignored: no setting has that name, a probable typo "
        "(did you mean ORCH_MAX_CONCURRENCY?)"]
    values = {v["key"]: v for v in report["values"]}
    assert values["max_concurrency"]["value"] == 1  # ignored, not applied

    code, out, err = cli(orch_home, "config", "show")
    assert code == 0 and err == ""
    assert "warning: ORCH_MAX_CONCURENCY is ignored" in out
    assert "max_concurrency = 1  (orch.yaml:" in out
    assert max(len(line) for line in out.splitlines()) <= 80

    code, out, _ = cli(orch_home, "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["environment"]["status"] == "warn"
    assert "ORCH_MAX_CONCURENCY" in checks["environment"]["detail"]
    assert "ORCH_BUDGET_DAY_USD" in checks["environment"]["detail"]


def test_a_config_error_is_exit_4_as_everywhere(orch_home: Path, cli: Cli) -> None:
    config = orch_home / "orch.yaml"
    config.write_text(config.read_text().replace("max_attempts: 3", "max_attempts: zero"))
    code, out, err = cli(orch_home, "config", "show")
    assert code == 4 and out == "" and "max_attempts" in err
