"""orch works from a wheel with no checkout (SPEC section 1): the default config, pipeline
and templates ship inside the package.

The wheel is built offline and installed into a clean virtualenv that has no orch and
no site-packages of its own interpreter. The wheel's dependencies are not downloaded:
the clean venv gets a `.pth` file naming the directories where the interpreter running
the tests found them (a virtualenv's site-packages, the system's, the user's), so the
test passes inside a venv and with the system interpreter alike. A `.pth` line only
adds a directory to sys.path, after the venv's own site-packages, so the orch found
there is the wheel's (an editable orch beside the dependencies stays invisible: the
`.pth` files of an added directory are not run).
"""

from __future__ import annotations

import email
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

CHECKOUT = Path(__file__).resolve().parents[2]
TEMPLATES = ("00-task.md", "01-questions.md", "02-analysis.md", "10-dev-report.md",
             "12-review.md", "13-test-report.md", "14-staging-report.md", "15-merge-report.md")


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout}\n{proc.stderr}"
    return proc


def requirements(lines: list[str] | None) -> list[Requirement]:
    """The Requires-Dist LINES that apply here without extras."""
    found = [Requirement(line) for line in lines or ()]
    return [req for req in found if req.marker is None or req.marker.evaluate({"extra": ""})]


def dependency_dirs(wheel: Path) -> list[str]:
    """The site directories where this interpreter finds the wheel's dependencies, transitively."""
    meta_name = next(name for name in zipfile.ZipFile(wheel).namelist()
                     if re.fullmatch(r"orch-[^/]+\.dist-info/METADATA", name))
    meta = email.message_from_bytes(zipfile.ZipFile(wheel).read(meta_name))
    todo = requirements(meta.get_all("Requires-Dist"))
    seen: set[str] = set()
    dirs: list[str] = []
    while todo:
        req = todo.pop()
        if req.name.lower() in seen:
            continue
        seen.add(req.name.lower())
        dist = metadata.distribution(req.name)  # PackageNotFoundError: install orch's deps first
        assert req.specifier.contains(dist.version, prereleases=True), \
            f"{req}: this interpreter has {dist.version}"
        where = str(Path(str(dist.locate_file(""))).resolve())
        if where not in dirs:
            dirs.append(where)
        todo.extend(requirements(dist.requires))
    return dirs


def clean_venv(venv: Path, wheel: Path, cwd: Path, env: dict[str, str]) -> Path:
    """A virtualenv without system site-packages that sees only the wheel's dependencies."""
    run([sys.executable, "-m", "venv", str(venv)], cwd, env)
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                  cwd, env).stdout.strip()
    Path(purelib, "orch_wheel_test_deps.pth").write_text("\n".join(dependency_dirs(wheel)) + "\n")
    return python


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
    python, orch = clean_venv(venv, wheels[0], tmp_path, env), venv / "bin" / "orch"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = subprocess.run([str(python), "-c", "import typer, yaml; import orch"], cwd=elsewhere,
                            env=env, capture_output=True, text=True, timeout=60)
    assert "No module named 'orch'" in before.stderr, before  # the deps, but no orch yet
    run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheels[0])],
        tmp_path, env)

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

    # Scheduling needs no checkout either: orch-tick and the units are in the wheel, and
    # the crontab line `orch schedule` prints runs as cron runs it (PATH /usr/bin:/bin).
    assert {"orch/data/bin/orch-tick", "orch/data/systemd/orch-tick.service",
            "orch/data/systemd/orch-tick.timer"} <= names
    line = run([str(orch), "--home", str(home), "schedule", "--cron"], elsewhere,
               env).stdout.strip()
    wrapper = Path(line.split()[-1])
    assert wrapper.is_relative_to(venv) and wrapper.is_file(), line
    assert f"ORCH_BIN={venv / 'bin' / 'orch'}" in line.split()
    ticked = subprocess.run(["/bin/sh", "-c", line.split(None, 5)[5]], cwd=elsewhere,
                            env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
                                 "SHELL": "/bin/sh", "LOGNAME": "root"},
                            capture_output=True, text=True, timeout=120)
    assert (ticked.returncode, ticked.stdout, ticked.stderr) == (0, "", ""), ticked
    assert '"ticks_total": 1' in run([str(orch), "--home", str(home), "queue", "--json"],
                                      elsewhere, env).stdout
