"""Feedback: labels joined at arrival to the logged prediction; bad input; duplicates; bulk."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from tests.conftest import LiveServer

from modelyard.errors import InvalidInput, NotFound
from modelyard.monitoring import PredictionLog
from modelyard.monitoring.config import MonitorConfig
from modelyard.monitoring.feedback import FeedbackItem, FeedbackService
from modelyard.store.tables import MonitorConfigRow
from modelyard.workspace import Workspace

NOW = datetime.now(UTC).replace(microsecond=0)


def write_log(
    ws: Workspace,
    requests: Sequence[dict[str, Any]],
    *,
    endpoint: str = "churn",
    segment_rows: int = 50_000,
) -> None:
    """Log ``requests`` (each: request_id, inputs, outputs, and optionally version, at,
    model, shadow) through a real :class:`PredictionLog` and write its segments."""
    plog = PredictionLog(ws, segment_rows=segment_rows, flush_seconds=3600)
    plog.start()
    try:
        for r in requests:
            inputs = {k: np.asarray(v) for k, v in r["inputs"].items()}
            outputs = {k: np.asarray(v) for k, v in r["outputs"].items()}
            assert plog.log(
                endpoint=endpoint,
                model=r.get("model", "churn-model"),
                version=r.get("version", 1),
                request_id=r["request_id"],
                inputs=inputs,
                outputs=outputs,
                rows=len(next(iter(inputs.values()))),
                latency_ms=1.0,
                at=r.get("at", NOW - timedelta(minutes=5)),
                shadow=r.get("shadow", False),
            )
    finally:
        plog.close()
    assert plog.stats()["dropped_rows"] == 0


def classifier_request(
    rid: str, ages: Sequence[int], labels: Sequence[int], **kw: Any
) -> dict[str, Any]:
    proba = np.array([[0.8, 0.2] if y == 0 else [0.3, 0.7] for y in labels], dtype=np.float32)
    return {
        "request_id": rid,
        "inputs": {
            "age": np.array(ages, dtype=np.int64),
            "plan": np.array(["pro" if a > 40 else "basic" for a in ages]),
        },
        "outputs": {"predictions": np.array(labels, dtype=np.int64), "probabilities": proba},
        **kw,
    }


@pytest.fixture
def feedback(any_workspace: Workspace) -> Iterator[FeedbackService]:
    yield FeedbackService(any_workspace)


def test_labels_join_to_the_logged_rows(any_workspace: Workspace) -> None:
    ws = any_workspace
    write_log(
        ws,
        [
            classifier_request("a", [31, 45, 52], [1, 0, 1], at=NOW - timedelta(minutes=3)),
            classifier_request("b", [20], [0], version=2, at=NOW - timedelta(minutes=2)),
        ],
    )
    service = FeedbackService(ws)
    result = service.submit(
        "churn",
        [
            {"request_id": "a", "row": 1, "label": 1},
            FeedbackItem(request_id="b", label=0),
            {"request_id": "a", "label": 1},  # row defaults to 0
        ],
    )
    assert result.model_dump() == {
        "endpoint": "churn",
        "received": 3,
        "stored": 3,
        "created": 3,
        "replaced": 0,
        "pending": 0,
        "held_until": None,
    }
    stored = service.list("churn")
    assert [(f.request_id, f.row) for f in stored] == [("a", 0), ("a", 1), ("b", 0)]
    a1 = stored[1]
    assert a1.model == "churn-model" and a1.version == 1
    assert a1.predicted_at == NOW - timedelta(minutes=3)
    assert a1.label == 1 and a1.revisions == 1 and a1.received_by == ws.actor
    assert a1.features == {"age": 45, "plan": "pro"}
    assert a1.prediction["predictions"] == 0
    assert a1.prediction["probabilities"] == pytest.approx([0.8, 0.2])
    assert list(a1.prediction) == ["predictions", "probabilities"]
    assert stored[2].version == 2
    # New labels are data, not audited changes.
    assert ws.audit.list(action="feedback.replace").items == []


def test_list_filters_by_predicted_time_and_version(feedback: FeedbackService) -> None:
    ws = feedback.ws
    write_log(
        ws,
        [
            classifier_request(
                f"r{i}", [30 + i], [i % 2], version=1 + i % 2, at=NOW - timedelta(hours=10 - i)
            )
            for i in range(6)
        ],
    )
    feedback.submit("churn", [{"request_id": f"r{i}", "label": 1} for i in range(6)])
    window = feedback.list("churn", start=NOW - timedelta(hours=8), end=NOW - timedelta(hours=5))
    assert [f.request_id for f in window] == ["r2", "r3", "r4"]
    assert [f.request_id for f in feedback.list("churn", version=2)] == ["r1", "r3", "r5"]
    assert feedback.list("other-endpoint") == []


def test_a_request_straddling_two_segments_keeps_its_row_numbers(
    feedback: FeedbackService,
) -> None:
    # Segments of 4 rows: request "b" has row 0 in the first segment and rows 1-2 in the next.
    write_log(
        feedback.ws,
        [
            classifier_request("a", [1, 2, 3], [0, 0, 0]),
            classifier_request("b", [4, 5, 6], [1, 1, 1]),
            classifier_request("c", [7, 8], [0, 1]),
        ],
        segment_rows=4,
    )
    assert len(PredictionLog(feedback.ws).segments("churn")) == 2
    feedback.submit("churn", [{"request_id": "b", "row": r, "label": 1} for r in (2, 0, 1)])
    ages = {f.row: f.features["age"] for f in feedback.list("churn")}
    assert ages == {0: 4, 1: 5, 2: 6}
    with pytest.raises(NotFound, match="'b' row 3"):
        feedback.submit("churn", [{"request_id": "b", "row": 3, "label": 1}])


def test_unknown_request_ids_store_nothing(feedback: FeedbackService) -> None:
    write_log(feedback.ws, [classifier_request("a", [30, 40], [0, 1])])
    items = [{"request_id": "a", "label": 0}]
    items += [{"request_id": f"missing-{i}", "label": 1} for i in range(8)]
    with pytest.raises(NotFound) as caught:
        feedback.submit("churn", items)
    message = str(caught.value)
    assert "8 feedback item(s)" in message and "'missing-0'" in message
    assert "'missing-4'" in message and "'missing-7'" not in message  # the first few only
    assert caught.value.status == 404
    # A row beyond the request's rows is unknown too.
    with pytest.raises(NotFound, match="'a' row 2"):
        feedback.submit(
            "churn",
            [{"request_id": "a", "row": 0, "label": 0}, {"request_id": "a", "row": 2, "label": 0}],
        )
    # Another endpoint's log is not searched.
    with pytest.raises(NotFound):
        feedback.submit("fraud", [{"request_id": "a", "label": 0}])
    assert feedback.list("churn") == []


def regressor_request(rid: str, x: float, y: float) -> dict[str, Any]:
    return {
        "request_id": rid,
        "inputs": {"x": np.array([x])},
        "outputs": {"value": np.array([y], dtype=np.float64)},
    }


@pytest.mark.parametrize(
    ("label", "match"),
    [
        ("high", "is not a number, and the endpoint predicts numbers"),
        (True, "is not a number"),
        ([1.0, 2.0], "must be a number, a string or a boolean"),
        ({"v": 1}, "must be a number, a string or a boolean"),
        (None, "must be a number, a string or a boolean"),
        (float("nan"), "must be finite"),
        (float("inf"), "must be finite"),
    ],
)
def test_a_label_of_the_wrong_type_is_refused(workspace: Workspace, label: Any, match: str) -> None:
    write_log(workspace, [regressor_request("a", 1.0, 2.5), regressor_request("b", 2.0, 3.5)])
    service = FeedbackService(workspace)
    items = [{"request_id": "a", "label": 2.0}, {"request_id": "b", "label": label}]
    with pytest.raises(InvalidInput, match=match) as caught:
        service.submit("churn", items)
    assert "#2" in str(caught.value)
    assert caught.value.status == 422
    assert service.list("churn") == []


def test_label_types_follow_the_task_and_the_logged_predictions(
    any_workspace: Workspace,
) -> None:
    ws = any_workspace
    service = FeedbackService(ws)
    write_log(
        ws,
        [
            {
                "request_id": "s",
                "inputs": {"x": np.array([1.0])},
                "outputs": {"label": np.array(["spam"])},
            }
        ],
        endpoint="mail",
    )
    with pytest.raises(InvalidInput, match="not a string, and the endpoint predicts strings"):
        service.submit("mail", [{"request_id": "s", "label": 1}])
    assert service.submit("mail", [{"request_id": "s", "label": "ham"}]).created == 1

    write_log(ws, [classifier_request("c", [30], [1])])
    # An integer classifier takes whole numbers (1.0 from JSON too), not fractions.
    with pytest.raises(InvalidInput, match="not a whole number"):
        service.submit(
            "churn",
            [{"request_id": "c", "label": 0.5}],
            config=MonitorConfig(task="classification"),
        )
    assert service.submit("churn", [{"request_id": "c", "label": 1.0}]).created == 1

    # A stored config is used when none is passed: a regression task wants numbers.
    write_log(ws, [regressor_request("r", 1.0, 2.0)], endpoint="price")
    with ws.store.write("test") as tx:
        tx.session.add(
            MonitorConfigRow(endpoint="price", config={"task": "regression"}, updated_at=NOW)
        )
    with pytest.raises(InvalidInput, match="the endpoint is a regressor"):
        service.submit("price", [{"request_id": "r", "label": "2.5"}])


def test_bad_items_are_refused_before_the_log_is_read(feedback: FeedbackService) -> None:
    with pytest.raises(InvalidInput, match=r"#1 .*request_id"):
        feedback.submit("churn", [{"label": 1}])
    with pytest.raises(InvalidInput, match=r"#2 .*lable"):
        feedback.submit("churn", [{"request_id": "a", "label": 1}, {"request_id": "a", "lable": 1}])
    with pytest.raises(InvalidInput, match="row"):
        feedback.submit("churn", [{"request_id": "a", "row": -1, "label": 1}])
    with pytest.raises(InvalidInput, match="row: Input should be less than or equal to"):
        feedback.submit("churn", [{"request_id": "a", "row": 10**20, "label": 1}])
    with pytest.raises(InvalidInput, match="lookback"):
        feedback.submit("churn", [{"request_id": "a", "label": 1}], lookback=timedelta(0))
    empty = feedback.submit("churn", [])
    assert (empty.received, empty.stored) == (0, 0)


def test_duplicate_feedback_latest_wins_and_is_audited(feedback: FeedbackService) -> None:
    ws = feedback.ws
    write_log(ws, [classifier_request("a", [30, 50], [0, 1]), classifier_request("b", [60], [1])])
    feedback.submit("churn", [{"request_id": "a", "label": 0}, {"request_id": "b", "label": 1}])
    first = {(f.request_id, f.row): f for f in feedback.list("churn")}

    result = feedback.submit(
        "churn", [{"request_id": "a", "label": 1}, {"request_id": "a", "row": 1, "label": 1}]
    )
    assert (result.created, result.replaced) == (1, 1)
    now = {(f.request_id, f.row): f for f in feedback.list("churn")}
    assert now[("a", 0)].label == 1 and now[("a", 0)].revisions == 2
    assert now[("a", 0)].received_at >= first[("a", 0)].received_at
    assert now[("a", 1)].revisions == 1 and now[("b", 0)].revisions == 1

    records = ws.audit.list(action="feedback.replace").items
    assert len(records) == 1
    record = records[0]
    assert record.entity_type == "feedback" and record.entity_id == "churn/a/0"
    assert record.before == {"labels": [{"request_id": "a", "row": 0, "label": 0, "revisions": 1}]}
    assert record.after == {"labels": [{"request_id": "a", "row": 0, "label": 1, "revisions": 2}]}
    assert ws.audit.verify().ok

    feedback.submit("churn", [{"request_id": "a", "label": 0}])
    assert {f.row: f.revisions for f in feedback.list("churn") if f.request_id == "a"} == {
        0: 3,
        1: 1,
    }


def test_duplicates_within_one_call_the_last_wins(feedback: FeedbackService) -> None:
    write_log(feedback.ws, [classifier_request("a", [30], [0])])
    result = feedback.submit(
        "churn",
        [
            {"request_id": "a", "label": 0},
            {"request_id": "a", "label": 1},
            {"request_id": "a", "row": 0, "label": 1},
            {"request_id": "a", "label": 0},
        ],
    )
    assert (result.received, result.stored, result.created, result.replaced) == (4, 1, 1, 0)
    [stored] = feedback.list("churn")
    assert stored.label == 0 and stored.revisions == 1
    assert feedback.ws.audit.list(action="feedback.replace").items == []


def test_late_feedback_within_the_lookback(feedback: FeedbackService) -> None:
    write_log(
        feedback.ws,
        [
            classifier_request("days-ago", [30], [1], at=NOW - timedelta(days=3)),
            classifier_request("long-ago", [30], [1], at=NOW - timedelta(days=40)),
        ],
    )
    assert feedback.submit("churn", [{"request_id": "days-ago", "label": 1}]).created == 1
    with pytest.raises(NotFound, match="last 30 days: 'long-ago'"):
        feedback.submit("churn", [{"request_id": "long-ago", "label": 1}])
    late = feedback.submit(
        "churn", [{"request_id": "long-ago", "label": 0}], lookback=timedelta(days=60)
    )
    assert late.created == 1
    assert [f.predicted_at for f in feedback.list("churn")] == [
        NOW - timedelta(days=40),
        NOW - timedelta(days=3),
    ]


def test_shadow_answers_and_reused_request_ids(feedback: FeedbackService) -> None:
    write_log(
        feedback.ws,
        [
            classifier_request("a", [30], [1], version=1, at=NOW - timedelta(hours=2)),
            # The shadow version answered the same request; the label is for the served answer.
            classifier_request("a", [30], [0], version=2, shadow=True, at=NOW - timedelta(hours=2)),
            # A client that reuses a request id: the newest prediction is the one labelled.
            classifier_request("b", [10], [0], version=1, at=NOW - timedelta(hours=3)),
            classifier_request("b", [99], [1], version=3, at=NOW - timedelta(hours=1)),
        ],
    )
    feedback.submit("churn", [{"request_id": "a", "label": 1}, {"request_id": "b", "label": 1}])
    stored = {f.request_id: f for f in feedback.list("churn")}
    assert stored["a"].version == 1 and stored["a"].prediction["predictions"] == 1
    assert stored["b"].version == 3 and stored["b"].features["age"] == 99


def test_a_failed_request_has_no_prediction_to_label(feedback: FeedbackService) -> None:
    plog = PredictionLog(feedback.ws, flush_seconds=3600)
    plog.log_error(
        endpoint="churn",
        model="churn-model",
        version=1,
        request_id="failed",
        status=500,
        latency_ms=2.0,
        at=NOW - timedelta(minutes=1),
    )
    plog.close()
    assert len(PredictionLog(feedback.ws).segments("churn")) == 1
    with pytest.raises(NotFound, match="'failed'"):
        feedback.submit("churn", [{"request_id": "failed", "label": 1}])


def test_missing_values_in_the_log_are_stored_as_null(feedback: FeedbackService) -> None:
    write_log(
        feedback.ws,
        [
            {
                "request_id": "n",
                "inputs": {"x": np.array([np.nan, 1.5]), "when": np.array(["a", "b"])},
                "outputs": {"value": np.array([np.inf, 2.0])},
            }
        ],
    )
    feedback.submit("churn", [{"request_id": "n", "label": 1.0}])
    [stored] = feedback.list("churn")
    assert stored.features == {"x": None, "when": "a"}
    assert stored.prediction == {"value": None}


def test_bulk_feedback_is_fast_and_all_or_nothing(any_workspace: Workspace) -> None:
    ws = any_workspace
    n = 100_000
    rng = np.random.default_rng(7)
    x = rng.normal(size=n)
    y = (x > 0).astype(np.int64)
    plog = PredictionLog(ws, flush_seconds=3600)
    start = NOW - timedelta(days=2)
    # 20,000 requests of 5 rows each: 100,000 logged rows in two segments.
    for i in range(n // 5):
        s = slice(5 * i, 5 * i + 5)
        plog.log(
            endpoint="churn",
            model="churn-model",
            version=1,
            request_id=f"req-{i:06d}",
            inputs={"x": x[s], "segment": np.array(["a", "b", "c", "d", "e"])},
            outputs={"predictions": y[s], "probabilities": np.stack([1 - y[s], y[s]], axis=1)},
            rows=5,
            latency_ms=1.0,
            at=start + timedelta(seconds=i),
        )
    plog.close()
    assert plog.stats()["written_rows"] == n

    # 10,000 labels spread over the whole log: 2,000 requests, every row of each.
    picked = rng.choice(n // 5, size=2000, replace=False)
    items: list[dict[str, Any]] = [
        {"request_id": f"req-{i:06d}", "row": r, "label": int(1 - y[5 * i + r])}
        for i in picked
        for r in range(5)
    ]
    service = FeedbackService(ws)
    t0 = time.perf_counter()
    result = service.submit("churn", items)
    took = time.perf_counter() - t0
    assert result.created == 10_000
    assert took < 5.0, f"10,000 labels took {took:.2f}s"

    stored = service.list("churn")
    assert len(stored) == 10_000
    some = next(f for f in stored if f.request_id == f"req-{picked[0]:06d}" and f.row == 3)
    assert some.features["x"] == pytest.approx(x[5 * picked[0] + 3])
    assert some.label == int(1 - y[5 * picked[0] + 3])

    # Replacing all of them: one statement, audit records in chunks.
    t0 = time.perf_counter()
    again = service.submit("churn", [{**item, "label": 1 - item["label"]} for item in items])
    took = time.perf_counter() - t0
    assert (again.created, again.replaced) == (0, 10_000)
    assert took < 5.0, f"replacing 10,000 labels took {took:.2f}s"
    assert len(ws.audit.list(action="feedback.replace").items) == 10

    # One bad item anywhere: nothing of the call is stored.
    bad = [{**item, "label": 1} for item in items[:500]] + [{"request_id": "nope", "label": 1}]
    with pytest.raises(NotFound):
        service.submit("churn", bad)
    assert all(f.revisions == 2 for f in service.list("churn"))


# -- labels that arrive before their prediction is in the log ---------------------------------


@pytest.fixture
def served(any_workspace: Workspace) -> Workspace:
    """``any_workspace`` with an endpoint "churn": labels are held only for a real endpoint."""
    from tests.monitoring.test_monitor import MODEL, training_frame

    from modelyard import Client

    X, _ = training_frame()
    client = Client(settings=any_workspace.settings)
    client.log_model(MODEL, "churn-model", input_example=X.head(5))
    client.close()
    any_workspace.endpoints.create("churn", "models:/churn-model/1")
    return any_workspace


def test_a_label_sent_before_its_prediction_is_logged_is_held_then_joined(
    served: Workspace,
) -> None:
    service = FeedbackService(served)
    write_log(served, [classifier_request("a", [30], [1])])
    result = service.submit(
        "churn", [{"request_id": "a", "label": 1}, {"request_id": "b", "row": 1, "label": 0}]
    )
    assert (result.stored, result.created, result.pending) == (1, 1, 1)
    assert result.held_until is not None
    assert result.held_until - datetime.now(UTC) > timedelta(minutes=59)  # the default hour
    [held] = service.held("churn")
    assert (held.request_id, held.row, held.label, held.status) == ("b", 1, 0, "pending")
    assert held.received_by == served.actor

    # Nothing new in the log: it stays held.
    nothing = service.join_held("churn")
    assert (nothing.joined, nothing.still_pending) == (0, 1)

    # The gateway writes its segment: the next pass joins the label.
    at = NOW - timedelta(seconds=2)
    write_log(served, [classifier_request("b", [41, 42], [1, 1], at=at)])
    joined = service.join_held("churn")
    assert (joined.joined, joined.still_pending, joined.predicted_at) == (1, 0, [at])
    assert service.held("churn") == []
    stored = {f.request_id: f for f in service.list("churn")}
    assert stored["b"].row == 1 and stored["b"].label == 0
    assert stored["b"].features["age"] == 42 and stored["b"].predicted_at == at


def test_held_labels_that_never_match_expire_and_stay_listed(served: Workspace) -> None:
    monitoring = served.monitoring
    monitoring.configure("churn", {"feedback_hold_seconds": 60})
    result = monitoring.submit_feedback(
        "churn",
        [{"request_id": "never", "label": 1}, {"request_id": "words", "label": "yes"}],
    )
    assert (result.stored, result.pending) == (0, 2)
    # "words" gets logged with integer predictions: its label does not fit.
    write_log(served, [classifier_request("words", [30], [1])])
    later = datetime.now(UTC) + timedelta(minutes=2)
    passed = monitoring.run_once(later)
    assert (passed.feedback_joined, passed.feedback_expired) == (0, 2) and not passed.errors
    held = {h.request_id: h for h in monitoring.list_held_feedback("churn")}
    assert held["never"].status == "expired"
    assert "no prediction with this request id was logged by" in held["never"].reason
    assert held["words"].status == "rejected"
    assert "is not a number, and the endpoint predicts numbers" in held["words"].reason
    assert [h.request_id for h in monitoring.list_held_feedback("churn", "expired")] == ["never"]
    status = monitoring.status("churn")[0]
    assert (status.feedback, status.feedback_pending) == (0, 0)
    assert (status.feedback_expired, status.feedback_rejected) == (1, 1)
    # Listed for 30 days, then deleted.
    monitoring.feedback.join_held("churn", now=later + timedelta(days=31))
    assert monitoring.list_held_feedback("churn") == []


def test_held_labels_of_a_deleted_endpoint_expire(served: Workspace) -> None:
    service = FeedbackService(served)
    assert service.submit("churn", [{"request_id": "gone", "label": 1}]).pending == 1
    served.endpoints.delete("churn")
    passed = served.monitoring.run_once(datetime.now(UTC) + timedelta(hours=2))
    assert passed.feedback_expired == 1
    [held] = service.held("churn")
    assert (held.status, held.reason) == ("expired", "its endpoint was deleted")


def test_the_newest_label_wins_between_held_and_joined_ones(served: Workspace) -> None:
    service = FeedbackService(served)
    service.submit("churn", [{"request_id": "d", "label": 0}])
    service.submit("churn", [{"request_id": "d", "label": 1}])  # replaces the held label
    [held] = service.held("churn")
    assert held.label == 1
    service.submit("churn", [{"request_id": "e", "label": 0}])
    write_log(served, [classifier_request("d", [30], [1]), classifier_request("e", [31], [1])])
    # Joined at once now, this label for "e" is newer than the held one, which goes.
    assert service.submit("churn", [{"request_id": "e", "label": 1}]).stored == 1
    assert [h.request_id for h in service.held("churn")] == ["d"]
    assert service.join_held("churn").joined == 1
    labels = {f.request_id: (f.label, f.revisions) for f in service.list("churn")}
    assert labels == {"d": (1, 1), "e": (1, 1)}


def test_feedback_right_after_a_prediction_on_the_real_gateway_is_kept(
    workspace: Workspace, live_server: LiveServer
) -> None:
    """The gateway writes its log every few seconds, in its own processes; a label posted to
    the API right after the answer used to get 404 and be lost."""
    import httpx
    from tests.monitoring.test_monitor import FEATURES, MODEL, training_frame

    from modelyard import Client
    from modelyard.serving.gateway import Gateway
    from modelyard.serving.http_protocol import GatewayHttpProtocol

    X, _ = training_frame()
    client = Client(settings=workspace.settings)
    client.log_model(MODEL, "churn", input_example=X.head(5))
    client.close()
    workspace.endpoints.create("churn", "models:/churn/1")
    # A long flush interval stands for "not written yet", however slow the machine is.
    gateway = Gateway(workspace, prediction_log=PredictionLog(workspace, flush_seconds=3600))
    server = LiveServer(gateway, http=GatewayHttpProtocol, access_log=False)
    try:
        body = {"dataframe_split": {"columns": FEATURES, "data": X.head(2).to_numpy().tolist()}}
        answer = httpx.post(
            f"{server.url}/endpoints/churn/invocations",
            json=body,
            headers={"x-request-id": "just-now"},
        )
        assert answer.status_code == 200, answer.text
        truth = int(MODEL.predict(X.iloc[[1]])[0])
        response = httpx.post(
            f"{live_server.url}/api/v1/monitoring/endpoints/churn/feedback",
            json={"items": [{"request_id": "just-now", "row": 1, "label": truth}]},
        )
        assert response.status_code == 200, response.text
        assert response.json()["stored"] == 0 and response.json()["pending"] == 1
        held = httpx.get(
            f"{live_server.url}/api/v1/monitoring/endpoints/churn/feedback/pending",
            params={"status": "pending"},
        )
        assert [h["request_id"] for h in held.json()] == ["just-now"]

        gateway.log.flush()  # the segment lands
        passed = workspace.monitoring.run_once()
        assert passed.feedback_joined == 1 and not passed.errors
        [label] = workspace.monitoring.list_feedback("churn")
        assert (label.request_id, label.row, label.label, label.version) == (
            "just-now",
            1,
            truth,
            1,
        )
        assert label.features["f0"] == pytest.approx(X.f0.iloc[1])
    finally:
        server.stop()
