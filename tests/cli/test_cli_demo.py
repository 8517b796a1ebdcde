"""`orch demo` through the installed console script refuses a home that is in use."""

from __future__ import annotations

from pathlib import Path

from support.demo import demo_env, orch


def test_demo_refuses_a_home_in_use(tmp_path: Path) -> None:
    env = demo_env(tmp_path)
    home = tmp_path / "used"
    home.mkdir()
    (home / "orch.yaml").write_text("max_concurrency: 1\n")
    done = orch(env, "--home", str(home), "demo", timeout=30)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: ") and "new or empty" in done.stderr
    assert sorted(p.name for p in home.iterdir()) == ["orch.yaml"]
