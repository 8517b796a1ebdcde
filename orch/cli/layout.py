"""The screens' layout as plain lines, so they fit a terminal (no rich here).

`orch queue` is laid out line by line: per repo a summary line, its tasks
(a row and the reason each waits), with the tasks that wait for the same
thing folded into one line ("5 tasks wait for a slot of app: 9, 10, 11, 12,
13"); then the running jobs and the reaper. With a height (`--watch`), task
lines are cut to fit and "+ N more" says what was left out, but the summary
lines, the running jobs and the reaper line are always shown. Words are
never broken: a line too long is wrapped at spaces (a word longer than the
width alone is cut with an ellipsis in watch mode).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any

from orch.timeutil import age_s, human

MIN_FOLD = 2  # tasks with the same reason, from this many on, share one line
SLOT_PREFIX = "serial gate:"


@dataclass(frozen=True)
class Line:
    """One screen line and its style (a rich style name; "" for none)."""

    text: str
    style: str = ""


@dataclass
class Block:
    """Lines that belong together (a task's row and reason): shown whole or not at all."""

    lines: list[Line] = field(default_factory=list)
    tasks: int = 1


def wrap(text: str, width: int, indent: str = "", style: str = "",
         one_line: bool = False, hanging: str | None = None) -> list[Line]:
    """TEXT wrapped at spaces to WIDTH, never inside a word (a word longer than the width
    stays whole); later lines start with HANGING (default: INDENT + 2 spaces). ONE_LINE
    cuts the text with an ellipsis instead."""
    if one_line:
        room = max(10, width - len(indent))
        flat = " ".join(text.split())
        return [Line(indent + (flat if len(flat) <= room else flat[:room - 1] + "…"), style)]
    later = indent + "  " if hanging is None else hanging
    pieces = textwrap.wrap(text.replace("\n", " "), max(20, width), initial_indent=indent,
                           subsequent_indent=later, break_long_words=False,
                           break_on_hyphens=False) or [indent]
    return [Line(piece, style) for piece in pieces]


def short_age(seconds: float | None) -> str:
    """12s, 5m, 3h, 2d: an age that fits a narrow column."""
    if seconds is None:
        return "-"
    value = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value // size}{unit}"
    return f"{value}s"


# --------------------------------------------------------------------------- orch queue


def repo_summary(name: str, gate: dict[str, Any], *, enabled: bool, tasks: int) -> str:
    """`app: 17 open tasks; 1/1 slots; active: task 7; 15 waiting; 1 paused; FROZEN`."""
    slots = f"{len(gate['active'])}/{gate['max_active'] or '?'} slots"
    parts = [f"{name}: {tasks} open task{'s' if tasks != 1 else ''}",
             slots + (" (serial gate off)" if not enabled else "")]
    if gate["active"]:
        ids = gate["active"]
        parts.append(f"active: task{'s' if len(ids) > 1 else ''} " + ", ".join(map(str, ids)))
    parts.append(f"{len(gate['waiting'])} waiting")
    if gate["paused"]:
        parts.append(f"{len(gate['paused'])} paused")
    if gate["frozen"]:
        parts.append("FROZEN")
    return "; ".join(parts)


def task_blocks(tasks: list[dict[str, Any]], width: int, *, one_line: bool) -> list[Block]:
    """A block per task (row + reason), tasks waiting for the same thing folded together."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for task in tasks:
        groups.setdefault(_fold_key(task), []).append(task)
    blocks, done = [], set()
    for task in tasks:
        key = _fold_key(task)
        if key in done:
            continue
        members = groups[key]
        if len(members) >= MIN_FOLD:
            done.add(key)
            text = _fold_text(members, width - 2 if one_line else None)
            blocks.append(Block(wrap(text, width, "  ", "cyan", one_line),
                                tasks=len(members)))
        else:
            blocks.append(_task_block(task, width, one_line))
    return blocks


def _fold_key(task: dict[str, Any]) -> str:
    reason = task["reason"]
    if task["state"] == "waiting" and not task["paused"] and reason.startswith(SLOT_PREFIX):
        return f"slot of {task['repo']}"
    return reason


def _fold_text(members: list[dict[str, Any]], room: int | None) -> str:
    """`N tasks wait for a slot of app: ids` (or `N tasks (ids): reason`); with ROOM, as
    many ids as fit on one line, then `and K more`."""
    first = members[0]
    slot = _fold_key(first).startswith("slot of ")

    def text(shown: int) -> str:
        ids = ", ".join(str(task["id"]) for task in members[:shown])
        if shown < len(members):
            ids += f" and {len(members) - shown} more"
        if slot:
            return f"{len(members)} tasks wait for a slot of {first['repo']}: {ids}"
        return f"{len(members)} tasks ({ids}): {first['reason']}"

    shown = len(members)
    while room is not None and shown > 1 and len(text(shown)) > room:
        shown -= 1
    return text(shown)


def _task_block(task: dict[str, Any], width: int, one_line: bool) -> Block:
    stage = task["stage"] + (f" r{task['round']}" if task["round"] else "")
    state = task["state"] + (", paused" if task["paused"] else "")
    age, moved = short_age(task["age_s"]), task.get("moved_age_s")
    if moved is not None and short_age(moved) != age:  # it moved since it was added
        age += f", moved {short_age(moved)} ago"
    head = f"  {task['id']:>4}  {stage}  {state}  {age}  "
    title = " ".join(task["title"].split())
    room = max(10, width - len(head))
    row = head + (title if len(title) <= room else title[:room - 1] + "…")
    return Block([Line(row), *wrap(task["reason"], width, "        ", "cyan", one_line)])


def running_lines(running: list[dict[str, Any]], limit: int | None) -> list[Line]:
    """The running jobs: a title, a header and one line per job."""
    cap = "" if limit is None else f" of max_concurrency {limit}"
    if not running:
        return [Line("running jobs: none" + ("" if limit is None else
                                             f" (max_concurrency {limit})"))]
    lines = [Line(f"running jobs: {len(running)}{cap}", "bold"),
             Line(f"  {'job':>5}  {'task':>5}  {'stage':<12} {'runner':<14} {'pid':>7}  "
                  f"{'age':>4}  heartbeat", "bold")]
    for job in running:
        beat = job["heartbeat_age_s"]
        lines.append(Line(
            f"  {job['job']:>5}  {job['task']:>5}  {job['stage']:<12} {job['runner']:<14} "
            f"{job['pid'] if job['pid'] is not None else '-':>7}  {short_age(job['age_s']):>4}"
            f"  {'-' if beat is None else short_age(beat) + ' ago'}"))
    return lines


def reaper_lines(reaper: dict[str, Any], counters: dict[str, int], width: int,
                 one_line: bool) -> list[Line]:
    """The reaper's totals and the last tick (UTC, as every time on these screens)."""
    last = reaper["last_tick_at"]
    tick = "never" if not last else f"{human(last)} UTC ({short_age(age_s(last))} ago)"
    line = (f"reaper: {reaper['reaped_total']} reaped, {reaper['impossible_queued_total']} "
            f"sanitized; last tick {tick}")
    lines = wrap(line, width, style="dim", one_line=one_line)
    others = "  ".join(_counter(name, value) for name, value in counters.items()
                       if name not in ("reaped_total", "impossible_queued_total"))
    if others:
        lines += wrap(f"counters: {others}", width, style="dim", one_line=one_line)
    return lines


def _counter(name: str, value: int) -> str:
    if name == "cost_microusd_total":
        return f"cost ${value / 1_000_000:.2f}"
    return f"{name} {value}"


def queue_lines(view: dict[str, Any], width: int, height: int | None = None) -> list[Line]:
    """`orch queue` as lines of at most WIDTH; with HEIGHT, at most that many lines."""
    one_line = height is not None
    gate = view["serial_gate"]
    unavailable = view.get("unavailable", {})
    fixed_tail = [Line(""), *running_lines(view["running"], view.get("max_concurrency")),
                  Line(""), *reaper_lines(view["reaper"], view["counters"], width, one_line)]
    sections = []
    for name, repo_gate in gate["repos"].items():
        tasks = [task for task in view["tasks"] if task["repo"] == name]
        head = wrap(repo_summary(name, repo_gate, enabled=gate["enabled"], tasks=len(tasks)),
                    width, style="bold", one_line=one_line)
        if unavailable.get(name):
            head += wrap(unavailable[name], width, "  ", "bold red", one_line)
        sections.append((head, task_blocks(tasks, width, one_line=one_line)))
    if not sections:
        return [Line("no repos and no open tasks"), *fixed_tail]
    budget = None if height is None else height - len(fixed_tail) - sum(
        len(head) for head, _ in sections)
    lines: list[Line] = []
    for head, blocks in sections:
        lines += head
        shown, budget = _fit(blocks, budget)
        lines += shown
    return lines + fixed_tail


def _fit(blocks: list[Block], budget: int | None) -> tuple[list[Line], int | None]:
    """The blocks that fit in BUDGET lines (all of them without one), then "+ N more"."""
    if budget is None:
        return [line for block in blocks for line in block.lines], None
    shown: list[Line] = []
    for index, block in enumerate(blocks):
        rest = blocks[index + 1:]
        reserve = 1 if rest else 0
        if len(block.lines) + reserve > budget:
            hidden = sum(b.tasks for b in blocks[index:])
            if budget >= 1:
                shown.append(Line(f"  + {hidden} more task{'s' if hidden != 1 else ''} "
                                  "(orch queue shows every one)", "dim"))
                budget -= 1
            return shown, budget
        shown += block.lines
        budget -= len(block.lines)
    return shown, budget
