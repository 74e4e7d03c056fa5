"""Personal input columns: dropped, hashed or masked before the prediction log and the
profiles (while the model gets the real values), and one subject's rows forgotten."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select
from tests.serving.conftest import GatewayServer
from tests.serving.test_http_protocol import spy_on_paths

from modelyard.client import Client
from modelyard.config import Settings
from modelyard.errors import InvalidInput
from modelyard.formats import PythonModel
from modelyard.monitoring.predlog import PredictionLog
from modelyard.monitoring.redaction import Redaction, mask
from modelyard.store.tables import PredictionSegmentRow, WindowProfileRow
from modelyard.workspace import Workspace

KEY = "a-redaction-key-of-32-characters"
REDACT = {"email": "drop", "customer_id": "hash", "phone": "mask"}
#: What the model received, request by request (the gateway runs in this process).
SEEN: list[dict[str, list[Any]]] = []


class Shop(PythonModel):
    """Answers amount + the length of the email: only the real email gives the answer."""

    def predict(self, inputs):  # type: ignore[no-untyped-def]
        SEEN.append({name: np.asarray(values).tolist() for name, values in inputs.items()})
        lengths = np.array([len(str(e)) for e in np.asarray(inputs["email"])], dtype=float)
        return np.asarray(inputs["amount"], dtype=float) + lengths


def frame(customers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": customers,
            "email": [f"{c.lower()}@example.com" for c in customers],
            "phone": [f"555-01{i:02d}" for i in range(len(customers))],
            "amount": [10.0 + i for i in range(len(customers))],
        }
    )


def digest(value: str) -> str:
    return hmac.new(KEY.encode(), value.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The shared workspace fixtures (workspace, client, run) with a key and pyfunc models."""
    return Settings(home=tmp_path / "home", redaction_key=KEY, trust_pickled_models=True)


def make_shop(ws: Workspace, *, redact: dict[str, str] | None = None) -> None:
    c = Client(settings=ws.settings)
    # 60 distinct values: free text, not categories the signature would hold requests to
    c.log_model(Shop(), "shop", input_example=frame([f"C{i}" for i in range(60)]))
    c.close()
    ws.endpoints.create("shop", "models:/shop/1", redact=REDACT if redact is None else redact)


def segments(ws: Workspace, endpoint: str = "shop") -> list[tuple[PredictionSegmentRow, bytes]]:
    with ws.store.read() as session:
        rows = session.scalars(
            select(PredictionSegmentRow)
            .where(PredictionSegmentRow.endpoint == endpoint)
            .order_by(PredictionSegmentRow.start_at, PredictionSegmentRow.id)
        ).all()
    return [(row, ws.artifacts.get_bytes(row.digest)) for row in rows]


def test_the_log_and_profiles_never_hold_the_values_while_the_model_gets_them(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_shop(workspace)
    workspace.monitoring.configure("shop", {"granularities": [300], "lateness_seconds": 30})
    server = GatewayServer(workspace)
    url = server.start()
    paths = spy_on_paths(monkeypatch)
    SEEN.clear()
    sent = frame(["C-1001", "C-2002", "C-1001"])
    body = {"dataframe_split": {"columns": list(sent.columns), "data": sent.values.tolist()}}
    try:
        for suffix in ("", "?via=asgi"):  # directly, and through ASGI
            r = httpx.post(f"{url}/endpoints/shop/invocations{suffix}", json=body, timeout=30)
            assert r.status_code == 200, r.text
            expected = sent.amount + sent.email.str.len()
            assert r.json()["predictions"] == expected.tolist()
        server.gateway.log.flush()
    finally:
        server.stop()
    assert paths == ["direct", "asgi"]
    assert SEEN[-1]["email"] == sent.email.tolist()  # the model got the real values
    assert SEEN[-1]["customer_id"] == sent.customer_id.tolist()

    raw = [*sent.customer_id, *sent.email, *sent.phone]
    stored = segments(workspace)
    assert stored
    for _, data in stored:
        for value in raw:
            assert value.encode() not in data
        table = pq.read_table(pa.BufferReader(data))
        assert "in__email" not in table.column_names
        assert table["in__customer_id"].to_pylist() == [digest(c) for c in sent.customer_id] * 2
        assert table["in__phone"].to_pylist() == ["********"] * 6  # 8 characters: class 5-8
        assert table["in__amount"].to_pylist() == sent.amount.tolist() * 2

    result = workspace.monitoring.run_once(datetime.now(UTC) + timedelta(minutes=11))
    assert result.windows_closed and not result.errors
    with workspace.store.read() as session:
        profiles = [r.profile for r in session.scalars(select(WindowProfileRow))]
    features = {name for p in profiles for name in p["features"]["features"]}
    assert {"customer_id", "phone", "amount"} <= features and "email" not in features
    text = json.dumps(profiles)
    for value in raw:
        assert value not in text
    assert digest("C-1001") in text  # the pseudonym is what was counted


def test_redaction_settings_and_a_missing_key(workspace: Workspace) -> None:
    make_shop(workspace, redact={})
    assert workspace.endpoints.get("shop").redact == {}
    keyless = Workspace.open(workspace.settings.model_copy(update={"redaction_key": None}))
    try:
        with pytest.raises(InvalidInput) as caught:
            keyless.endpoints.update("shop", redact={"customer_id": "hash"})
        assert "MODELYARD_REDACTION_KEY" in caught.value.detail
        keyless.endpoints.update("shop", redact={"email": "drop", "phone": "mask"})  # no key
    finally:
        keyless.close()
    with pytest.raises(InvalidInput, match="no input 'e-mail'"):
        workspace.endpoints.update("shop", redact={"e-mail": "drop"})
    with pytest.raises(InvalidInput, match="drop, hash or mask"):
        workspace.endpoints.update("shop", redact={"email": "shred"})
    short = workspace.settings.model_copy(update={"redaction_key": "short"})
    with pytest.raises(InvalidInput, match="at least 16"):
        Workspace.open(short).endpoints.update("shop", redact={"customer_id": "hash"})
    assert workspace.endpoints.get("shop").redact == {"email": "drop", "phone": "mask"}


def test_mask_keeps_type_and_length_class_only() -> None:
    texts = np.array(["ab", "555-0100", "a much longer value here", None, ""], dtype=object)
    assert mask(texts).tolist() == ["****", "********", "*" * 32, None, ""]
    numbers = np.array([5551234.0, -0.0042, 0.0, np.nan])
    assert mask(numbers).tolist()[:3] == [1e6, -0.001, 0.0] and np.isnan(mask(numbers)[3])
    assert mask(np.array([17, 230])).tolist() == [10, 100]
    assert mask(np.array([True, False])).tolist() == [False, False]


def log_customers(ws: Workspace, customers: list[str], *, segment_rows: int) -> None:
    """Log one 1-row request per customer, through the endpoint's redaction."""
    plog = PredictionLog(ws, segment_rows=segment_rows, flush_seconds=3600)
    plog.set_redaction("shop", Redaction.for_endpoint(ws.endpoints.get("shop").redact, ws.settings))
    data = frame(customers)
    for i in range(len(customers)):
        plog.log(
            endpoint="shop",
            model="shop",
            version=1,
            request_id=f"r{i}",
            inputs={name: data[name].to_numpy()[i : i + 1] for name in data.columns},
            outputs={"predictions": np.array([1.0])},
            rows=1,
            latency_ms=1.0,
            at=datetime(2026, 3, 1, 12, tzinfo=UTC) + timedelta(seconds=i),
        )
    plog.close()


@pytest.fixture
def keyed(any_workspace: Workspace) -> Iterator[Workspace]:
    """``any_workspace`` (SQLite, PostgreSQL) with the redaction key, and the shop endpoint."""
    ws = Workspace.open(
        any_workspace.settings.model_copy(
            update={"redaction_key": KEY, "trust_pickled_models": True}
        )
    )
    make_shop(ws)
    yield ws
    ws.close()


def test_forget_removes_exactly_the_subjects_rows_and_is_audited(keyed: Workspace) -> None:
    # segments of 4: [C1 C2 C3 C2] [C2 C2 C2 C2] [C3 C1]
    customers = ["C1", "C2", "C3", "C2", "C2", "C2", "C2", "C2", "C3", "C1"]
    log_customers(keyed, customers, segment_rows=4)
    before = segments(keyed)
    assert [row.rows for row, _ in before] == [4, 4, 2]

    result = keyed.monitoring.forget("shop", "customer_id", "C2")
    assert (result.rows, result.segments, result.hashed) == (6, 2, True)

    after = segments(keyed)
    assert [row.rows for row, _ in after] == [2, 2]  # the all-C2 segment is gone
    assert not keyed.artifacts.exists(before[1][0].digest)
    assert not keyed.artifacts.exists(before[0][0].digest)  # rewritten: the old file is gone
    assert keyed.artifacts.exists(before[2][0].digest)  # untouched
    kept = []
    for row, data in after:
        table = pq.read_table(pa.BufferReader(data))
        assert table.num_rows == row.rows
        assert row.start_at == table["at"][0].as_py() and row.end_at == table["at"][-1].as_py()
        kept += table["in__customer_id"].to_pylist()
    assert kept == [digest(c) for c in customers if c != "C2"]

    (record,) = keyed.audit.list(action="predictions.forget").items
    assert record.entity_id == "shop" and record.actor == keyed.actor
    assert record.after == {"column": "customer_id", "rows": 6, "segments": 2, "hashed": True}
    assert "C2" not in json.dumps(record.model_dump(mode="json")).replace("customer_id", "")
    assert digest("C2") not in json.dumps(record.model_dump(mode="json"))

    unknown = keyed.monitoring.forget("shop", "customer_id", "C999")
    assert (unknown.rows, unknown.segments) == (0, 0)
    assert [row.rows for row, _ in segments(keyed)] == [2, 2]
    assert len(keyed.audit.list(action="predictions.forget").items) == 2

    by_amount = keyed.monitoring.forget("shop", "amount", "12")  # a kept numeric column
    assert by_amount.rows == 1  # C3's first row: amount 10 + 2
    with pytest.raises(InvalidInput, match="masked"):
        keyed.monitoring.forget("shop", "phone", "555-0100")


def test_forget_of_a_hashed_column_needs_the_key(keyed: Workspace) -> None:
    log_customers(keyed, ["C1", "C2"], segment_rows=10)
    keyless = Workspace.open(keyed.settings.model_copy(update={"redaction_key": None}))
    try:
        with pytest.raises(InvalidInput, match="MODELYARD_REDACTION_KEY"):
            keyless.monitoring.forget("shop", "customer_id", "C1")
    finally:
        keyless.close()
    assert [row.rows for row, _ in segments(keyed)] == [2]


def test_forget_and_redact_through_sdk_api_and_cli(
    client, workspace: Workspace, run, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    make_shop(workspace, redact={})
    endpoint = client.endpoints.update("shop", redact=REDACT)
    assert endpoint.redact == REDACT
    log_customers(workspace, ["C1", "C2", "C1"], segment_rows=10)
    result = client.monitoring.forget("shop", "customer_id", "C1")
    assert (result.rows, result.segments, result.column) == (2, 1, "customer_id")
    with pytest.raises(InvalidInput, match="masked"):
        client.monitoring.forget("shop", "phone", "x")

    monkeypatch.setenv("MODELYARD_REDACTION_KEY", KEY)
    out = run("endpoints", "redact", "shop", "--keep", "phone", "--mask", "amount").stdout
    assert "amount: mask, customer_id: hash, email: drop" in out
    out = run("predictions", "forget", "shop", "--key", "customer_id=C2").stdout
    assert "removed 1 rows of shop by customer_id" in out
    bad = run("predictions", "forget", "shop", "--key", "customer_id", ok=False)
    assert bad.returncode == 2 and "COLUMN=VALUE" in bad.stderr

    monkeypatch.delenv("MODELYARD_REDACTION_KEY")
    keyless = run("endpoints", "redact", "shop", "--clear", "--hash", "phone", ok=False)
    assert keyless.returncode == 2 and "MODELYARD_REDACTION_KEY" in keyless.stderr
    assert workspace.endpoints.get("shop").redact == {
        "customer_id": "hash",
        "email": "drop",
        "amount": "mask",
    }


def test_forget_by_a_kept_text_column_matches_the_text_as_sent(keyed: Workspace) -> None:
    """ "007" is another customer than "7" (a review found forget took both)."""
    keyed.endpoints.update("shop", redact={"phone": "mask"})  # customer_id kept as sent
    log_customers(keyed, ["7", "007", "7", "1e3", "1000"], segment_rows=10)
    assert keyed.monitoring.forget("shop", "customer_id", "007").rows == 1
    assert keyed.monitoring.forget("shop", "customer_id", "1e3").rows == 1
    (_, data) = segments(keyed)[0]
    assert pq.read_table(pa.BufferReader(data))["in__customer_id"].to_pylist() == [
        "7",
        "7",
        "1000",
    ]
