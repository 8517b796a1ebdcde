"""The docs test: the user docs in docs/ and README.md stay in step with the code.

Both directions are checked, so a new command, flag, config key, stage, event
kind, artifact or column fails here until it is documented, and a documented
one that the code no longer has fails here until the docs drop it:

- every command path and every long option of the Typer app (hidden commands
  such as `supervise` excepted) has its section `### orch <path>` in
  docs/commands.md, with an example that uses each option; every `orch ...`
  written in a code span or block of the docs names a real command and only
  its real options;
- the default pipeline's stages, the runners, gates and verdicts are in
  docs/pipeline.md; the artifact manifest is in docs/artifacts.md with a
  skeleton in docs/templates/; every config key is in docs/configuration.md
  (with its default); every event kind the code records is in
  docs/observability.md; every table, column and index of the live schema
  is in docs/data-model.md.

Each failure says what is missing and where to add it.
"""

from __future__ import annotations

import ast
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer
from support.checkout import CHECKOUT as ROOT

import orch.cli
from orch import artifacts, config, errors, model

DOCS = ROOT / "docs"
COMMANDS_DOC = DOCS / "commands.md"

# The commands SPEC sections 1-10 name; each must exist in the app and in the docs.
SPEC_COMMANDS = (
    "init", "tick", "queue", "logs", "task add", "task import", "task list", "task show",
    "pause", "resume", "retry", "cancel", "approve", "reject", "freeze", "unfreeze",
    "pipeline show", "test-run", "doctor", "demo", "gc", "metrics", "snapshot",
)
# Global options that take a value (everything else before the command is a flag).
GLOBAL_WITH_VALUE = ("--home",)
# The docs every user needs (docs/performance.md belongs to the benchmarks).
REQUIRED_DOCS = ("overview", "pipeline", "commands", "configuration", "operations",
                 "observability", "data-model", "agents", "artifacts", "troubleshooting",
                 "architecture")
WORD = re.compile(r"[a-z][a-z0-9-]*")
LONG_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# `orch` as a program name: not part of a word, a file name (`orch.yaml`) or a
# module path (`orch/engine`); an absolute path to it (`/venv/bin/orch`) counts.
ORCH_WORD = re.compile(r"(?<![\w.~-])orch(?=[ \t])")
SEPARATORS = re.compile(r"\s(?:\||\|\||&&|;|#|>|>>|2>&1)(?:\s|$)")


# --- reading the app -------------------------------------------------------------------


@functools.cache
def _app() -> Any:
    """The root command; typer may vendor its own click, so groups are told apart by
    their `commands` mapping, not by class."""
    return typer.main.get_command(orch.cli.app)


def _is_group(command: Any) -> bool:
    return isinstance(getattr(command, "commands", None), dict)


def _walk(group: Any, prefix: str = "", *, hidden: bool = False) -> Iterator[tuple[str, Any]]:
    for name, command in sorted(group.commands.items()):
        if command.hidden and not hidden:
            continue
        path = f"{prefix} {name}".strip()
        yield path, command
        if _is_group(command):
            yield from _walk(command, path, hidden=hidden)


def _leaves(*, hidden: bool = False) -> dict[str, Any]:
    """Every runnable command path (`task add`, `tick`, ...); groups left out."""
    return {path: command for path, command in _walk(_app(), hidden=hidden)
            if not _is_group(command)}


@functools.cache
def _groups() -> frozenset[str]:
    return frozenset(path for path, command in _walk(_app(), hidden=True)
                     if _is_group(command))


def _long_options(command: Any) -> set[str]:
    found: set[str] = set()
    for param in command.params:
        if param.param_type_name == "option" and not getattr(param, "hidden", False):
            found |= {o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")}
    return found - {"--help"}


# --- reading Markdown ------------------------------------------------------------------


def _read(path: Path) -> str:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing: write it (see its issue)"
    return path.read_text(encoding="utf-8")


def _code(text: str, *, examples: bool = False) -> list[str]:
    """The code of a Markdown text: each line of a fenced block, and each inline span.

    With `examples`, only the lines of fenced blocks that are not `text` (the
    synopses `orch tick [--max-claims N] ...` are ```text blocks, not examples)."""
    pieces: list[str] = []
    fence: str | None = None
    language = ""
    for line in text.splitlines():
        marker = re.match(r"\s*(```+|~~~+)\s*(\w*)", line)
        if marker:
            if fence is None:
                fence, language = marker.group(1)[:3], marker.group(2)
                continue
            if marker.group(1).startswith(fence):
                fence = None
                continue
        if fence is not None:
            if not examples or language != "text":
                pieces.append(line)
        elif not examples:
            pieces += [m.group(2) for m in re.finditer(r"(`+)(.+?)\1", line)]
    return [piece.replace("\\|", "|") for piece in pieces]


@dataclass(frozen=True)
class Section:
    title: str
    level: int
    text: str


def _sections(text: str) -> list[Section]:
    """Headings (levels 1-4) and the text under each up to the next heading."""
    found: list[Section] = []
    title, level, lines = "", 0, list[str]()
    fenced = False
    for line in text.splitlines():
        if re.match(r"\s*(```|~~~)", line):
            fenced = not fenced
        heading = None if fenced else re.match(r"(#{1,4}) (.*)", line)
        if heading:
            found.append(Section(title, level, "\n".join(lines)))
            title, level, lines = heading.group(2).strip().strip("`"), len(heading.group(1)), []
        else:
            lines.append(line)
    found.append(Section(title, level, "\n".join(lines)))
    return found


def _command_sections() -> dict[str, str]:
    """docs/commands.md: {command path: its section} for headings `### orch <path>`;
    "" is the `## Global options` section."""
    result: dict[str, str] = {}
    for section in _sections(_read(COMMANDS_DOC)):
        match = re.fullmatch(r"orch ([a-z][a-z -]*)", section.title)
        if match:
            path = match.group(1).strip()
            assert path not in result, f"docs/commands.md: two sections for `orch {path}`"
            result[path] = section.text
        elif section.title.lower() == "global options":
            result[""] = section.text
    return result


def _section_named(path: Path, title: str) -> str:
    for section in _sections(_read(path)):
        if section.title.lower() == title.lower():
            return section.text
    raise AssertionError(f"{path.relative_to(ROOT)}: no section titled {title!r}; add it")


def _table_keys(text: str) -> list[str]:
    """The backticked first cell of each Markdown table row: `| `key` | ... |`."""
    return re.findall(r"^\|\s*`([^`]+)`", text, flags=re.MULTILINE)


@dataclass(frozen=True)
class Invocation:
    path: str            # "" for `orch --version`; may name no real command
    root_flags: tuple[str, ...]
    flags: tuple[str, ...]
    raw: str


def _invocations(piece: str) -> list[Invocation]:
    """Every `orch [GLOBAL...] COMMAND [SUB] ...` in one line or span of code."""
    found = []
    groups = _groups()
    for match in ORCH_WORD.finditer(piece):
        rest = piece[match.end():]
        cuts = [m.start() for m in (SEPARATORS.search(rest), ORCH_WORD.search(rest)) if m]
        rest = rest[:min(cuts)] if cuts else rest
        tokens = rest.split()
        root_flags: list[str] = []
        index = 0
        while index < len(tokens) and tokens[index].startswith("-"):
            flag = tokens[index].split("=", 1)[0]
            root_flags.append(flag)
            index += 2 if flag in GLOBAL_WITH_VALUE and "=" not in tokens[index] else 1
        words: list[str] = []
        if index < len(tokens) and WORD.fullmatch(tokens[index]):
            words.append(tokens[index])
            index += 1
            if words[0] in groups and index < len(tokens) and WORD.fullmatch(tokens[index]):
                words.append(tokens[index])
                index += 1
        elif index < len(tokens) or not root_flags:
            continue  # `orch` followed by a path, a placeholder or nothing: not a command
        flags = LONG_FLAG.findall(" ".join(tokens[index:]))
        found.append(Invocation(" ".join(words), tuple(f for f in root_flags
                                                      if f.startswith("--")),
                                tuple(flags), match.group(0) + rest))
    return found


def _docs_files() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


# --- commands --------------------------------------------------------------------------


def test_every_required_doc_exists() -> None:
    missing = [f"docs/{name}.md" for name in REQUIRED_DOCS if not (DOCS / f"{name}.md").is_file()]
    assert not missing, f"missing user docs: {missing}"


def test_the_spec_commands_exist_in_the_app() -> None:
    leaves = _leaves()
    missing = [name for name in SPEC_COMMANDS if name not in leaves]
    assert not missing, (f"commands of the SPEC missing from the app: {missing} "
                         "(register them in orch/cli/*.py)")


def test_every_command_has_its_section_in_commands_md() -> None:
    sections = _command_sections()
    missing = [path for path in _leaves() if path not in sections]
    assert not missing, ("docs/commands.md has no section for: "
                         + ", ".join(f"`orch {p}`" for p in missing)
                         + " (add a heading `### orch <command>` with usage and an example)")


def test_every_section_of_commands_md_is_a_command() -> None:
    leaves = _leaves()
    unknown = [path for path in _command_sections() if path and path not in leaves]
    assert not unknown, (f"docs/commands.md documents commands the app does not have: "
                         f"{unknown} (remove the sections, or add the commands)")


def test_every_option_is_documented_with_an_example() -> None:
    sections = _command_sections()
    commands = {"": _app(), **_leaves()}
    problems = []
    for path, command in commands.items():
        text = sections.get(path)
        if text is None:
            continue  # reported by test_every_command_has_its_section_in_commands_md
        used: set[str] = set()
        for piece in _code(text, examples=True):
            for call in _invocations(piece):
                used |= set(call.root_flags) if path == "" else (
                    set(call.flags) if call.path == path else set())
        name = f"orch {path}" if path else "orch"
        where = f"`### {name}`" if path else "`## Global options`"
        for option in sorted(_long_options(command)):
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text):
                problems.append(f"{option} of `{name}` is not described under {where}")
            elif option not in used:
                problems.append(f"{option} of `{name}` has no example under {where} "
                                f"(add a code line `{name} {option} ...`)")
    assert not problems, "docs/commands.md:\n" + "\n".join(problems)


def test_help_and_completion_are_documented() -> None:
    text = _read(COMMANDS_DOC)
    for needle in ("--help", "orch --install-completion"):
        assert needle in text, f"docs/commands.md: mention {needle!r}"


def test_documented_flags_exist_on_their_command() -> None:
    """In a command's section, a flag written as its own code span (`--max-claims N`) or
    in the prose belongs to that command (flags in `orch ...` lines are checked below)."""
    commands = {"": _app(), **_leaves()}
    problems = []
    for path, text in _command_sections().items():
        command = commands.get(path)
        if command is None:
            continue  # reported by test_every_section_of_commands_md_is_a_command
        known = _long_options(command) | {"--help"}
        flags = [(m.group(0), piece) for piece in _code(text) if piece.startswith("--")
                 for m in [LONG_FLAG.match(piece)] if m]
        flags += [(flag, "in the prose") for flag in LONG_FLAG.findall(_prose(text))]
        problems += [f"`orch {path}` has no option {flag} ({where})".replace("orch `", "orch`")
                     for flag, where in flags if flag not in known]
    assert not problems, "docs/commands.md:\n" + "\n".join(problems)


def _prose(text: str) -> str:
    """A Markdown text without its fenced blocks and inline code spans."""
    text = re.sub(r"^\s*(```|~~~).*?^\s*\1[^\n]*$", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"(`+).+?\1", "", text)


def test_every_orch_invocation_in_the_docs_exists() -> None:
    """Every `orch ...` in a code span or block names a real command and its real options."""
    commands = {"": _app(), **_leaves(hidden=True)}
    groups = _groups()
    root_options = _long_options(_app()) | {"--help"}
    problems = []
    for doc in [*_docs_files(), ROOT / "README.md"]:
        for piece in _code(_read(doc)):
            for call in _invocations(piece):
                where = f"{doc.relative_to(ROOT)}: `{call.raw.strip()}`"
                for flag in call.root_flags:
                    if flag not in root_options:
                        problems.append(f"{where}: {flag} is not a global option")
                if call.path in groups:
                    continue  # `orch task` names the group
                command = commands.get(call.path)
                if command is None:
                    problems.append(f"{where}: no command `orch {call.path}`")
                    continue
                for flag in call.flags:
                    if flag not in _long_options(command) | {"--help"}:
                        problems.append(f"{where}: `orch {call.path}` has no option {flag}")
    assert not problems, "docs name commands or options the app lacks:\n" + "\n".join(problems)


def test_readme_shows_the_demo() -> None:
    assert "orch demo" in _read(ROOT / "README.md"), "README.md must show `orch demo`"


def test_exit_statuses_are_in_commands_md() -> None:
    text = _section_named(COMMANDS_DOC, "Exit status")
    codes = {0, 2, 3, 4, 5, 75} | {cls.exit_code for cls in _subclasses(errors.OrchError)}
    missing = [code for code in sorted(codes) if not re.search(rf"^\|\s*{code}\s*\|", text,
                                                               flags=re.MULTILINE)]
    assert not missing, f"docs/commands.md `## Exit status` table lacks the rows {missing}"


def _subclasses(cls: type[errors.OrchError]) -> list[type[errors.OrchError]]:
    found: list[type[errors.OrchError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


# --- pipeline, artifacts, configuration --------------------------------------------------


def test_pipeline_md_names_stages_runners_gates_and_verdicts(tmp_path: Path) -> None:
    from orch.pipeline import load_pipeline

    pipeline = load_pipeline(config.load_settings(tmp_path, environ={}))
    text = _read(DOCS / "pipeline.md")
    names = {
        "stage of the default pipeline": pipeline.names,
        "terminal stage": model.TERMINAL_STAGES,
        "runner (orch.model.RUNNERS)": model.RUNNERS,
        "gate (orch.model.GATES)": model.GATES,
        "verdict": tuple(v.value for v in model.Verdict),
        "run outcome": tuple(o.value for o in model.RunOutcome),
    }
    missing = [f"{what} `{name}`" for what, values in names.items() for name in values
               if f"`{name}`" not in text]
    assert not missing, "docs/pipeline.md does not mention: " + ", ".join(missing)
    assert "orch pipeline show" in text, "docs/pipeline.md: show `orch pipeline show`"


def test_artifacts_md_lists_the_manifest_and_templates_exist() -> None:
    text = _read(DOCS / "artifacts.md")
    missing = [name for name in artifacts.MANIFEST if f"`{name}`" not in text]
    assert not missing, f"docs/artifacts.md: add rows for {missing} to the manifest table"
    listed = [name for name in _table_keys(text) if re.fullmatch(r"\d\d-[a-z-]+\.md", name)]
    unknown = sorted(set(listed) - set(artifacts.MANIFEST))
    assert not unknown, f"docs/artifacts.md lists files not in orch.artifacts.MANIFEST: {unknown}"
    skeletons = [name for name in artifacts.MANIFEST if not (DOCS / "templates" / name).is_file()]
    assert not skeletons, f"docs/templates/ lacks a skeleton for {skeletons}"


def test_every_prompt_role_has_a_template() -> None:
    roles = {"analyst", "developer", "reviewer", "tester"} | set(config.DEFAULT_AGENTS)
    missing = [r for r in sorted(roles) if not (DOCS / "templates" / "prompts" / f"{r}.md")
               .is_file()]
    assert not missing, f"docs/templates/prompts/ lacks {missing}"


CONFIG_KEYS = {
    "top-level key": (*config.TOP_KEYS,),
    "flag": tuple(config.FLAG_DEFAULTS),
    "agent key": config.AGENT_KEYS,
    "repo key": config.REPO_KEYS,
    "repo test key": config.TEST_KEYS,
    "repo staging key": config.STAGING_KEYS,
    "repo merge key": config.MERGE_KEYS,
    "budget key": config.BUDGET_KEYS,
}


def test_configuration_md_has_every_key() -> None:
    documented = set(_table_keys(_read(DOCS / "configuration.md")))
    missing = [f"{what} `{key}`" for what, keys in CONFIG_KEYS.items() for key in keys
               if key not in documented]
    assert not missing, ("docs/configuration.md lacks (add a table row `| `key` | default | "
                         "range | meaning |`): " + ", ".join(missing))


def test_configuration_md_states_each_default() -> None:
    text = _read(DOCS / "configuration.md")
    rows = {m.group(1): m.group(0) for m in
            re.finditer(r"^\|\s*`([^`]+)`.*$", text, flags=re.MULTILINE)}
    defaults = {key: default for key, (_, _, default) in config.SCALARS.items()}
    defaults |= dict(config.FLAG_DEFAULTS)
    problems = []
    for key, default in defaults.items():
        row = rows.get(key)
        shown = {None: "null", True: "true", False: "false"}.get(default, str(default)) \
            if not isinstance(default, int) or isinstance(default, bool) else str(default)
        if row is None:
            problems.append(f"`{key}` has no table row")
        elif not re.search(rf"`{re.escape(shown)}`", row):
            problems.append(f"`{key}`: its row does not state the default `{shown}`")
    assert not problems, "docs/configuration.md:\n" + "\n".join(problems)


# Sections of docs/configuration.md whose table rows must state the code's defaults.
NESTED_DEFAULTS = {
    "agents": config.AgentRole,
    "repos": config.RepoConfig,
    "repos.NAME.test": config.TestConfig,
    "repos.NAME.staging": config.StagingConfig,
    "repos.NAME.merge": config.RepoConfig,
    "budget": config.Budget,
}


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_yaml_value(item) for item in value) + "]"
    return str(value)


def test_configuration_md_states_nested_defaults() -> None:
    import dataclasses

    sections = {s.title: s.text for s in _sections(_read(DOCS / "configuration.md"))}
    problems = []
    for title, cls in NESTED_DEFAULTS.items():
        text = sections.get(title)
        if text is None:
            problems.append(f"no section `{title}`")
            continue
        rows = {m.group(1): m.group(0) for m in
                re.finditer(r"^\|\s*`([^`]+)`.*$", text, flags=re.MULTILINE)}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, row in rows.items():
            field = fields.get(key)
            if field is None:
                continue
            if field.default is not dataclasses.MISSING:
                default = field.default
            elif field.default_factory is not dataclasses.MISSING:
                default = field.default_factory()
                if dataclasses.is_dataclass(default):
                    continue  # a nested section of its own
            else:
                continue  # required
            shown = "{}" if default == {} else _yaml_value(default)
            if f"`{shown}`" not in row:
                problems.append(f"`{title}` row `{key}` does not state the default `{shown}`")
    assert not problems, "docs/configuration.md:\n" + "\n".join(problems)


def test_configuration_md_documents_no_unknown_key() -> None:
    known = {key for keys in CONFIG_KEYS.values() for key in keys}
    unknown = [key for key in _table_keys(_read(DOCS / "configuration.md"))
               if re.fullmatch(r"[a-z_]+", key) and key not in known]
    assert not unknown, f"docs/configuration.md documents keys orch.config does not know: {unknown}"


# --- events and schema -----------------------------------------------------------------


def _recorded_event_kinds() -> dict[str, str]:
    """{kind: file:line} of every events.record(db, KIND, ...) call under orch/.

    KIND may be a literal, a conditional of literals, a local variable assigned
    literals in the same function, or a module constant (`maint.GC_EVENT`)."""
    sources = sorted((ROOT / "orch").rglob("*.py"))
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sources}
    constants: dict[str, set[str]] = {}
    for tree in trees.values():
        for name, values in _string_assignments(tree, top_level=True).items():
            constants.setdefault(name, set()).update(values)
    kinds: dict[str, str] = {}
    unreadable = []
    for path, tree in trees.items():
        for scope, call in _record_calls(tree):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            argument = call.args[1] if len(call.args) > 1 else next(
                (k.value for k in call.keywords if k.arg == "kind"), None)
            values = _strings(argument, {**constants, **_string_assignments(scope)})
            if not values:
                unreadable.append(where)
            for value in sorted(values):
                kinds.setdefault(value, where)
    assert not unreadable, (f"cannot read the event kind of events.record at {unreadable}: "
                            "pass a literal or a module constant")
    return kinds


def _record_calls(tree: ast.Module) -> Iterator[tuple[ast.AST, ast.Call]]:
    """Each `events.record(...)` call with its innermost enclosing function (or module)."""
    def visit(node: ast.AST, scope: ast.AST) -> Iterator[tuple[ast.AST, ast.Call]]:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) \
                else scope
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                    and child.func.attr == "record" and isinstance(child.func.value, ast.Name)
                    and child.func.value.id in ("events", "events_state")):
                yield scope, child
            yield from visit(child, inner)

    yield from visit(tree, tree)


def _strings(node: ast.AST | None, names: dict[str, set[str]]) -> set[str]:
    if node is None:
        return set()
    if isinstance(node, ast.Name):
        return names.get(node.id, set())
    if isinstance(node, ast.Attribute):
        return names.get(node.attr, set())
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)}


def _string_assignments(scope: ast.AST, *, top_level: bool = False) -> dict[str, set[str]]:
    """{name: the strings assigned to it} in a scope (only its own statements if top_level)."""
    found: dict[str, set[str]] = {}
    nodes = ast.iter_child_nodes(scope) if top_level else ast.walk(scope)
    for node in nodes:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, set()).update(_strings(node.value, {}))
    return found


def test_observability_md_lists_every_event_kind() -> None:
    kinds = _recorded_event_kinds()
    assert {"created", "reaped", "sanitized", "error"} <= set(kinds), "the scan found too little"
    table = _section_named(DOCS / "observability.md", "Event kinds")
    documented = set(_table_keys(table))
    missing = [f"`{kind}` ({where})" for kind, where in sorted(kinds.items())
               if kind not in documented]
    assert not missing, ("docs/observability.md `## Event kinds` table lacks: "
                         + ", ".join(missing))
    stale = sorted(documented - set(kinds))
    assert not stale, f"docs/observability.md lists event kinds the code never records: {stale}"


def _schema(tmp_path: Path) -> tuple[dict[str, list[str]], list[str], list[str]]:
    from orch.state.schema import open_database

    db = open_database(tmp_path / "orch.db")
    try:
        tables = [row["name"] for row in db.all(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        columns = {table: [row["name"] for row in db.all(f"PRAGMA table_info({table})")]
                   for table in tables}
        indexes = [row["name"] for row in db.all(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")]
        counters = [row["name"] for row in db.all("SELECT name FROM counters")]
    finally:
        db.close()
    return columns, indexes, counters


def test_data_model_md_has_every_table_and_column(tmp_path: Path) -> None:
    columns, indexes, _ = _schema(tmp_path)
    doc = DOCS / "data-model.md"
    sections = {s.title: s.text for s in _sections(_read(doc))}
    problems = []
    for table, names in columns.items():
        text = sections.get(table)
        if text is None:
            problems.append(f"no section `### {table}`")
            continue
        documented = set(_table_keys(text))
        problems += [f"`{table}.{c}` is not in the table of `### {table}`" for c in names
                     if c not in documented]
        problems += [f"`### {table}` documents `{c}`, which the schema lacks"
                     for c in documented - set(names)]
    text = _read(doc)
    problems += [f"index `{name}` is not mentioned" for name in indexes if f"`{name}`" not in text]
    assert not problems, "docs/data-model.md:\n" + "\n".join(problems)


def test_observability_md_names_every_counter(tmp_path: Path) -> None:
    _, _, counters = _schema(tmp_path)
    text = _read(DOCS / "observability.md")
    missing = [name for name in counters if f"`{name}`" not in text and
               f"`orch_{name}`" not in text]
    assert not missing, f"docs/observability.md does not name the counters {missing}"


def test_observability_md_names_every_metric(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("ORCH_")]:
        monkeypatch.delenv(key)
    assert orch.cli.run(["--home", str(tmp_path / "home"), "metrics"]) == 0
    names = set(re.findall(r"^# TYPE (\S+)", capsys.readouterr().out, flags=re.MULTILINE))
    assert names, "orch metrics printed no metric"
    table = _section_named(DOCS / "observability.md", "orch metrics: Prometheus")
    documented = " ".join(_table_keys(table))
    missing = sorted(name for name in names if not re.search(rf"\b{name}\b", documented))
    assert not missing, f"docs/observability.md metrics table lacks {missing}"


# --- links -----------------------------------------------------------------------------


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    return {re.sub(r"[^\w\- ]", "", section.title.lower()).replace(" ", "-")
            for section in _sections(path.read_text(encoding="utf-8")) if section.title}


@pytest.mark.parametrize("doc", [*sorted(DOCS.glob("*.md")), ROOT / "README.md"],
                         ids=lambda p: p.name)
def test_relative_links_resolve(doc: Path) -> None:
    text = _read(doc)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if path.name == "performance.md" and not path.exists():
            continue  # written by the benchmarks
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links {broken}"


# --- docs/architecture.md: every module, and only modules that exist --------------------

ARCHITECTURE_DOC = DOCS / "architecture.md"
PY_NAME = re.compile(r"(?<![\w/.-])([a-z_][a-z0-9_]*\.py)\b")


def _orch_modules() -> list[Path]:
    return sorted(p.relative_to(ROOT) for p in (ROOT / "orch").rglob("*.py")
                  if "__pycache__" not in p.parts)


def test_architecture_md_names_every_module() -> None:
    """Each module of orch/ is in docs/architecture.md, by its file name in its package's
    table or by its path; a package (a folder) is named by its path."""
    text = ARCHITECTURE_DOC.read_text(encoding="utf-8")
    missing = []
    for path in _orch_modules():
        if path.name == "__init__.py" and f"{path.parent.as_posix()}/" not in text \
                and path.parent.name + "/" not in text:
            missing.append(f"{path.parent.as_posix()}/ (a package)")
        elif path.name != "__init__.py" and path.name not in text:
            missing.append(path.as_posix())
    assert not missing, ("docs/architecture.md does not name: " + ", ".join(missing)
                         + " (add each to the table of its layer)")


def test_architecture_md_names_no_module_that_is_gone() -> None:
    text = ARCHITECTURE_DOC.read_text(encoding="utf-8")
    names = {p.name for p in _orch_modules()}
    gone = sorted(set(PY_NAME.findall(text)) - names - {"pyproject.py"})
    assert not gone, f"docs/architecture.md names modules orch no longer has: {gone}"


# --- the docs stand alone ---------------------------------------------------------------

# Names of documents that do not ship with orch: the contract it was built from, and
# paths outside the project. A shipped text that cites them leaves its reader nowhere.
NOT_SHIPPED = re.compile(r"\bSPEC\b|\bthe contract\b|\.\./shared/|\bsection \d+ of\b")
DOC_PATH = re.compile(r"(?<![\w/.-])docs/[\w./-]+\.md\b")


def _shipped_texts() -> list[Path]:
    """What a user reads: README, CHANGELOG, docs/, and the text files the package carries
    (the default orch.yaml and pipeline, templates, prompts, orch-tick, the units)."""
    data = [p for p in (ROOT / "orch" / "data").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts]
    return sorted({ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS.rglob("*.md"), *data})


def _help_texts() -> list[tuple[str, str]]:
    """(command path, its help and its options' help): what `--help` prints."""
    found = [("orch", _app().help or "")]
    for path, command in _walk(_app()):
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        found.append((f"orch {path}", "\n".join(texts)))
    return found


def test_the_docs_stand_alone() -> None:
    """No shipped text or help cites a document that does not ship (the contract orch
    was built from, "SPEC section N"), and every docs/NAME.md named exists."""
    problems = []
    for path in _shipped_texts():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            if NOT_SHIPPED.search(line):
                problems.append(f"{where}: cites a document that does not ship: {line.strip()}")
            for name in DOC_PATH.findall(line):
                if not (ROOT / name).is_file() and name != "docs/performance.md":
                    problems.append(f"{where}: names {name}, which does not exist")
    for command, text in _help_texts():
        if NOT_SHIPPED.search(text):
            problems.append(f"`{command} --help` cites a document that does not ship")
    assert not problems, "\n".join(problems)
