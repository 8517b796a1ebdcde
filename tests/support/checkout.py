"""Where the checkout is: tests that read its shipped files (config/, bin/, docs/, bench/)."""

from __future__ import annotations

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
