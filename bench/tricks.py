"""What each start-up trick buys an idle `orch tick`, counted in instructions.

    python bench/tricks.py                       # every trick (6 to 9 minutes)
    python bench/tricks.py --only app_for,lazy   # some of them
    python bench/tricks.py --out FILE            # also write the table (Markdown) to FILE

An idle tick is `orch --home H tick` on a home made by `orch init` with one git
repository and no tasks (it prints "nothing to do"). Wall-clock noise on these
machines is larger than most tricks, so each figure is the instruction count of
the whole process under valgrind's callgrind, which repeats to within a few
hundred thousand instructions. A trick is measured by running the idle tick on a
copy of this checkout's `orch/` with the trick taken out (a source patch below,
which must match exactly once, so the script fails loudly when the code moves)
and subtracting the count of the unchanged copy.

Lazy imports are measured the other way round: the cost of importing, at the
start of the process, a module that a function imports lazily. Only modules an
idle tick never loads, imported lazily by a module it does load, can save the
idle tick anything; each (another package's modules together, e.g. `rich`) is
counted, the ten most expensive shown; then, at once, those imported lazily in
`orch.cli`, the others, and all of them.

Children run as bench/run.py runs them: this interpreter, the copy first on
PYTHONPATH, bytecode caching on (a temporary PYTHONPYCACHEPREFIX), every ORCH_*
variable removed, and PYTHONHASHSEED=0 so that runs repeat. Needs valgrind and git.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORCH_MAIN = "import sys; sys.argv[0] = 'orch'; from orch.cli import main; main()"
SETTLE_S = 3.2  # orch.yamlio caches no file changed in the last 3 s
TOP = 10  # lazily imported modules counted one by one
RULE = 3.0  # per cent of an idle tick a trick must buy to be kept (issue 9)


@dataclass(frozen=True)
class Patch:
    """Replace OLD (which must occur exactly once) by NEW in orch/FILE."""

    file: str
    old: str
    new: str


@dataclass(frozen=True)
class Trick:
    name: str
    what: str
    patches: tuple[Patch, ...]  # what takes the trick out
    judged: bool = True  # False: not kept for speed, measured to show it costs nothing


TRICKS = (
    Trick("frozen_record", "`orch.frozen.frozen_record` instead of `@dataclass(frozen=True)` "
          "(the config records, the stage machine's, the state's records and `Identity`)",
          (Patch("frozen.py", "    made = dataclass(init=False, repr=False, eq=False)(cls)\n",
                 "    return dataclass(frozen=True)(cls)  # bench: the plain dataclass\n"
                 "    made = dataclass(init=False, repr=False, eq=False)(cls)\n"),)),
    Trick("app_for", "`cli._app_for`: Typer builds only the command named, not all of them",
          (Patch("cli/__init__.py", "typer.main.get_command(_app_for(args))",
                 "typer.main.get_command(app)"),)),
    Trick("yaml_cache", "`.yaml-cache.json` (orch.yamlio): no PyYAML while the files "
          "are unchanged",
          (Patch("yamlio.py", "        return _active_cache.load(path)\n",
                 "        return _read_and_parse(path)  # bench: no cache\n"),)),
    Trick("typer_plain", "Typer's rich help and pretty tracebacks off (`rich_markup_mode=None`, "
          "`pretty_exceptions_enable=False`; the framework floor has them off too)",
          (Patch("cli/__init__.py",
                 "    pretty_exceptions_enable=False,\n    rich_markup_mode=None,\n", ""),),
          judged=False),
)


class BenchError(Exception):
    """A child failed, or a patch no longer matches the code."""


# --------------------------------------------------------------------------- trees and home


def make_tree(work: Path, name: str, patches: tuple[Patch, ...] = ()) -> Path:
    """A copy of this checkout's orch/ under WORK/trees/NAME with PATCHES applied."""
    tree = work / "trees" / name
    shutil.copytree(ROOT / "orch", tree / "orch",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for patch in patches:
        path = tree / "orch" / patch.file
        text = path.read_text(encoding="utf-8")
        if text.count(patch.old) != 1:
            raise BenchError(f"{name}: orch/{patch.file} no longer holds exactly one "
                             f"{patch.old.strip()!r}; update bench/tricks.py")
        path.write_text(text.replace(patch.old, patch.new), encoding="utf-8")
    return tree


def child_env(work: Path, tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORCH_") and k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    env.update(PYTHONPATH=str(tree), PYTHONPYCACHEPREFIX=str(work / "pycache"),
               PYTHONHASHSEED="0", GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    return env


def run(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[-4:])} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def make_home(work: Path, tree: Path) -> Path:
    """`orch init` with one repository (an empty commit) and no tasks.

    Then waits until every file made so far (the home's, the trees') is old enough
    for orch.yamlio to cache it.
    """
    env = child_env(work, tree)
    repo = work / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "main"], ["-c", "user.name=bench", "-c",
                 "user.email=bench@orch.invalid", "commit", "-q", "--allow-empty", "-m", "init"]):
        run(["git", *args], env, repo)
    home = work / "H"
    run([sys.executable, "-c", ORCH_MAIN, "--home", str(home), "init", "--repo",
         f"app={repo}"], env, work)
    time.sleep(SETTLE_S)
    return home


# --------------------------------------------------------------------------- counting


def idle_tick(work: Path, home: Path, tree: Path, prelude: str = "") -> list[str]:
    argv = [sys.executable, "-c", prelude + ORCH_MAIN, "--home", str(home), "tick"]
    env = child_env(work, tree)
    for _warm_up in range(2):  # bytecode written, YAML cache filled for this tree's yamlio
        if "nothing to do" not in run(argv, env, work).stdout:
            raise BenchError(f"the tick is not idle: {' '.join(argv)}")
    return argv


def instructions(work: Path, home: Path, tree: Path, prelude: str = "") -> int:
    """Instructions of one idle tick run on TREE (PRELUDE runs first in the same process)."""
    argv = idle_tick(work, home, tree, prelude)
    out = work / "callgrind.out"
    proc = run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
               child_env(work, tree), work)
    out.unlink(missing_ok=True)
    if "nothing to do" not in proc.stdout:
        raise BenchError("the tick under callgrind was not idle")
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if found is None:
        raise BenchError(f"no instruction count from callgrind:\n{proc.stderr[-2000:]}")
    return int(found.group(1))


@dataclass(frozen=True)
class Result:
    trick: str
    saved: int  # instructions per idle tick the trick saves (cost, for a lazy import)
    base: int
    rule: bool = True  # False: shown for context, no keep/drop of its own

    @property
    def percent(self) -> float:
        return 100.0 * self.saved / self.base

    def row(self) -> str:
        verdict = ("keep" if self.percent >= RULE else "drop") if self.rule else "—"
        return (f"| {self.trick} | {self.saved / 1e6:,.1f} M | {self.percent:.1f}% "
                f"| {verdict} |")


# --------------------------------------------------------------------------- lazy imports


def lazy_imports(tree: Path) -> list[tuple[str, str, str | None]]:
    """Every import inside a function: (importing module, module, imported name or None)."""
    found: list[tuple[str, str, str | None]] = []
    for path in sorted((tree / "orch").rglob("*.py")):
        parts = path.relative_to(tree).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for func in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import):
                    found += [(module, alias.name, None) for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found += [(module, node.module, alias.name) for alias in node.names]
    return sorted(set(found), key=lambda site: (site[0], site[1], site[2] or ""))


PROBE = """
import io, sys
from contextlib import redirect_stdout
from orch.cli import run
with redirect_stdout(io.StringIO()):
    assert run(["--home", sys.argv[1], "tick"]) == 0
loaded = set(sys.modules)
import importlib.util, json
def target(module, name):
    if name is None:
        return module
    try:
        return f"{module}.{name}" if importlib.util.find_spec(f"{module}.{name}") else module
    except (ImportError, ValueError, AttributeError):
        return module
pairs = json.loads(sys.argv[2])
print(json.dumps({"loaded": sorted(loaded), "targets": [target(m, n) for _, m, n in pairs]}))
"""

def lazy_candidates(work: Path, home: Path, tree: Path) -> tuple[dict[str, list[str]], str]:
    """Modules imported lazily by modules an idle tick loads, that the idle tick never loads.

    Returns {module: [importing modules]} and a sentence counting every lazy import:
    those naming a module the idle tick loads anyway (they buy it nothing), those
    above, and those in modules the idle tick never loads (they serve other commands).
    """
    sites = lazy_imports(tree)
    probe = run([sys.executable, "-c", PROBE, str(home), json.dumps(sites)],
                child_env(work, tree), work)
    answer = json.loads(probe.stdout)
    loaded = set(answer["loaded"])
    candidates: dict[str, list[str]] = {}
    anyway = elsewhere = 0
    for (importer, _, _), target in zip(sites, answer["targets"], strict=True):
        if target in loaded:
            anyway += 1
        elif importer in loaded:
            candidates.setdefault(target, []).append(importer)
        else:
            elsewhere += 1
    note = (f"{len(sites)} distinct imports inside functions: {anyway} name a module an idle "
            f"tick loads anyway (they buy it nothing), "
            f"{len(sites) - anyway - elsewhere} import {len(candidates)} modules it never "
            f"loads from modules it loads (counted above), {elsewhere} are in modules it "
            f"never loads.")
    return candidates, note


# --------------------------------------------------------------------------- the report


def measure_tricks(work: Path, home: Path, base: int, trees: dict[str, Path]) -> list[Result]:
    results = []
    for trick in TRICKS:
        if trick.name in trees:
            without = instructions(work, home, trees[trick.name])
            results.append(Result(trick.what, without - base, base, rule=trick.judged))
            print(f"  {trick.name}: {without:,} without the trick", flush=True)
    return results


def groups(candidates: dict[str, list[str]]) -> dict[str, list[str]]:
    """Each orch module alone; another package's modules together (`rich`: what render uses)."""
    found: dict[str, list[str]] = {}
    for module in sorted(candidates):
        top = module.split(".")[0]
        found.setdefault(module if top == "orch" else top, []).append(module)
    return found


def measure_lazy(work: Path, home: Path, tree: Path, base: int) -> tuple[list[Result], str]:
    candidates, note = lazy_candidates(work, home, tree)
    costs = []
    for name, modules in groups(candidates).items():
        cost = instructions(work, home, tree, "".join(f"import {m}; " for m in modules)) - base
        importers = sorted({who for m in modules for who in candidates[m]})
        label = name if modules == [name] else f"{name} ({', '.join(modules)})"
        costs.append((cost, f"lazy `import {label}` (in {', '.join(importers)})"))
        print(f"  import {label}: +{cost:,}", flush=True)
    costs.sort(reverse=True)
    results = [Result(label, cost, base) for cost, label in costs[:TOP]]
    results.append(Result(f"the other {len(costs[TOP:])} such imports, one at a time (summed)",
                          sum(cost for cost, _ in costs[TOP:]), base, rule=False))
    cli = sorted(m for m, who in candidates.items() if any(w.startswith("orch.cli") for w in who))
    rest = sorted(set(candidates) - set(cli))
    for label, modules in ((f"rule: `orch.cli` imports a command's engine module and rich "
                            f"inside the command ({len(cli)} modules)", cli),
                           (f"rule: the engine imports what few ticks need inside the phase "
                            f"that needs it ({', '.join(rest)})", rest),
                           (f"all {len(candidates)} lazily imported modules at once",
                            sorted(candidates))):
        every = "".join(f"import {module}; " for module in modules)
        results.append(Result(label, instructions(work, home, tree, every) - base, base,
                              rule=label.startswith("rule")))
        print(f"  {label}: +{results[-1].saved:,}", flush=True)
    return results, note


def table(base: int, results: list[Result], note: str) -> str:
    lines = [f"Idle tick: {base:,} instructions ({sys.executable}, Python "
             f"{sys.version.split()[0]}).", "",
             "| Trick | Instructions saved per idle tick | % of the idle tick | Keep (≥ 3%) |",
             "|---|---|---|---|", *(result.row() for result in results)]
    return "\n".join([*lines, "", note] if note else lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="comma-separated: "
                        + ",".join([*(t.name for t in TRICKS), "lazy"]))
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    only = {name for name in args.only.split(",") if name}
    if shutil.which("valgrind") is None:
        print("bench/tricks.py needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="orch-tricks-") as tmp:
        work = Path(tmp)
        tree = make_tree(work, "base")
        trees = {trick.name: make_tree(work, trick.name, trick.patches) for trick in TRICKS
                 if not only or trick.name in only}
        home = make_home(work, tree)  # waits until the copies' files may be cached too
        base = instructions(work, home, tree)
        again = instructions(work, home, tree)
        print(f"  idle tick: {base:,} and {again:,} instructions (two runs)", flush=True)
        results = measure_tricks(work, home, base, trees)
        note = f"The unchanged idle tick counted {base:,} and {again:,} in two runs."
        if not only or "lazy" in only:
            lazy, lazy_note = measure_lazy(work, home, tree, base)
            results += lazy
            note = f"{note} {lazy_note}"
    text = table(base, results, note)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
