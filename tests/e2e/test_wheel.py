"""orch works from a wheel with no checkout (SPEC section 1): the default config, pipeline
and templates ship inside the package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
TEMPLATES = ("00-task.md", "01-questions.md", "02-analysis.md", "10-dev-report.md",
             "12-review.md", "13-test-report.md", "14-staging-report.md", "15-merge-report.md")


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    # Build from a copy, so the checkout (which others edit) gets no build/ or egg-info.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.cfg"):
        if (CHECKOUT / name).exists():
            shutil.copy2(CHECKOUT / name, source / name)
    shutil.copytree(CHECKOUT / "orch", source / "orch",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORCH_") and k not in ("PYTHONPATH", "PYTHONHOME",
                                                       "VIRTUAL_ENV")}
    env["PIP_NO_INDEX"] = "1"  # offline: nothing may come from a registry

    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(dist), str(source)], tmp_path, env)
    wheels = list(dist.glob("orch-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    assert {"orch/data/orch.yaml", "orch/data/pipeline.yaml"} <= names
    for template in TEMPLATES:
        assert f"orch/data/templates/{template}" in names
    assert any(name.startswith("orch/data/templates/prompts/") for name in names)
    assert zipfile.ZipFile(wheels[0]).read("orch/data/orch.yaml") == \
        (CHECKOUT / "config" / "orch.yaml").read_bytes()

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], tmp_path, env)
    python, orch = venv / "bin" / "python", venv / "bin" / "orch"
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
        tmp_path, env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([str(python), "-c", "import orch; print(orch.__file__)"], elsewhere, env)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # not the checkout

    home = tmp_path / "H"
    init = run([str(orch), "--home", str(home), "init"], elsewhere, env)
    assert "wrote orch.yaml" in init.stdout
    assert (home / "orch.yaml").read_bytes() == (CHECKOUT / "config" / "orch.yaml").read_bytes()
    assert (home / "orch.db").is_file()

    shown = run([str(orch), "--home", str(home), "pipeline", "show", "--json"], elsewhere, env)
    stages = json.loads(shown.stdout)["stages"]
    assert [stage["name"] for stage in stages] == ["analysis", "development", "review",
                                                   "testing", "staging", "merge"]
    source_line = run([str(orch), "--home", str(home), "pipeline", "show"], elsewhere,
                      env).stdout.splitlines()[-1]
    assert source_line.startswith("source: ") and str(venv) in source_line
