"""The Prometheus text of `orch metrics` (orch.engine.commands.metrics.render), from a
Metrics value."""

from __future__ import annotations

from support.prometheus import parse_metrics

from orch.engine.commands.metrics import Metrics, render


def test_metrics_escape_labels_and_name_unknown_counters() -> None:
    text = render(Metrics(counters={"odd-name.x": 2}, tasks={('we"ird\\\n', "active"): 1},
                          jobs_running=1, jobs_queued=0, last_tick_at=None,
                          oldest_waiting_age_s=0.0))
    samples = parse_metrics(text)
    assert samples["orch_odd_name_x"] == 2
    assert samples['orch_tasks{stage="we\\"ird\\\\\\n",state="active"}'] == 1
    assert samples["orch_last_tick_timestamp_seconds"] == 0
