import math

from modelyard.client import Client


def test_nan_metric_round_trips(client: Client) -> None:
    run = client.tracking.start_run("e")
    client.tracking.log_metrics(run.id, {"loss": float("nan"), "ok": 1.0})
    got = client.tracking.get_run(run.id)
    assert math.isnan(got.metrics["loss"]) and got.metrics["ok"] == 1.0
