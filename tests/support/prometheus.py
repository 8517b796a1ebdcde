"""Reading Prometheus text expositions (`orch metrics`): every sample, checked line by line."""

from __future__ import annotations

import re

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-z_]+="(?:[^"\\]|\\.)*",?)*\})? '
                    r'(-?[0-9.e+]+|NaN|[+-]Inf)$')


def parse_metrics(text: str) -> dict[str, float]:
    """Every sample of a Prometheus text exposition; each family has HELP and TYPE first."""
    assert text.endswith("\n")
    samples: dict[str, float] = {}
    typed: set[str] = set()
    helped: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge"), line
            typed.add(name)
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            assert match.group(1) in typed and match.group(1) in helped, line
            key = line.rsplit(" ", 1)[0]
            assert key not in samples, f"duplicate series {key}"
            samples[key] = float(line.rsplit(" ", 1)[1])
    return samples
