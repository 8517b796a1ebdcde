"""UTC ISO-8601 timestamps, the only time format stored (SPEC section 4)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


def now_iso() -> str:
    """The current UTC time as `2026-11-25T01:02:03.456789Z`."""
    return to_iso(datetime.now(UTC))


def to_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_iso_epoch(seconds: float) -> str:
    """Epoch seconds (a file's mtime) in the stored form."""
    return to_iso(datetime.fromtimestamp(seconds, UTC))


def parse_iso(text: str) -> datetime:
    """Parse a stored timestamp back into an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def age_s(text: str | None, now: datetime | None = None) -> float | None:
    """Seconds since a stored timestamp, or None when there is none."""
    if not text:
        return None
    current = now or datetime.now(UTC)
    return max(0.0, (current - parse_iso(text)).total_seconds())


def later(seconds: float) -> str:
    """The UTC time `seconds` from now, stored form."""

    return to_iso(datetime.now(UTC) + timedelta(seconds=seconds))


def utc_day_start() -> str:
    """00:00 UTC today, stored form (the day budget counts from here)."""
    now = datetime.now(UTC)
    return to_iso(now.replace(hour=0, minute=0, second=0, microsecond=0))


def epoch_of(stamp: str) -> float:
    """A stored timestamp as epoch seconds."""
    return parse_iso(stamp).timestamp()


def monotonic() -> float:
    """The monotonic clock (heartbeat_mono): immune to clock steps and DST."""

    return time.monotonic()


def human(stamp: str | None) -> str:
    """A stored timestamp as people read it: `2026-12-02 02:03:17`, in UTC like every time
    orch shows (screens say "UTC" once); "-" for none. `--json` keeps the stored form."""
    if not stamp:
        return "-"
    return parse_iso(stamp).strftime("%Y-%m-%d %H:%M:%S")


def span(seconds: float | None) -> str:
    """A duration as people read it: `45 s`, `12 min`, `3 h 5 min`, `2 days`; "-" for none."""
    if seconds is None:
        return "-"
    value = int(max(0.0, seconds))
    if value < 120:
        return f"{value} s"
    if value < 7200:
        return f"{value // 60} min"
    if value < 172800:
        hours, minutes = divmod(value // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{value // 86400} days"
