from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from tests.conftest import LiveServer

from modelyard.config import Settings
from modelyard.workspace import Workspace

FEATURES = [f"f{i}" for i in range(6)]


@pytest.fixture(scope="session")
def frame() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(11)
    X = pd.DataFrame(rng.normal(size=(400, len(FEATURES))), columns=FEATURES)
    y = ((X.f0 + X.f1 - X.f2) > 0).astype(int)
    return X, y


@pytest.fixture(scope="session")
def models(frame: tuple[pd.DataFrame, pd.Series]) -> dict[str, object]:
    X, y = frame
    return {
        "lr": LogisticRegression().fit(X, y),
        "lr2": LogisticRegression(C=0.01).fit(X, y),
        "rf": RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0).fit(X, y),
    }


class GatewayServer:
    """A workspace with registered models and a live gateway (+control plane) on loopback."""

    def __init__(self, ws: Workspace) -> None:
        from modelyard.api.app import create_app
        from modelyard.serving.gateway import Gateway

        self.ws = ws
        self.gateway = Gateway(ws, control_plane=create_app(workspace=ws), refresh_seconds=0.1)
        self.server: LiveServer | None = None

    def start(self) -> str:
        from modelyard.serving.http_protocol import GatewayHttpProtocol

        self.server = LiveServer(self.gateway, http=GatewayHttpProtocol, access_log=False)
        return self.server.url

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture
def gateway_ws(tmp_path: Path) -> Iterator[Workspace]:
    ws = Workspace.open(Settings(home=tmp_path / "home"))
    yield ws
    ws.close()


@pytest.fixture
def gateway(gateway_ws: Workspace) -> Iterator[GatewayServer]:
    server = GatewayServer(gateway_ws)
    yield server
    server.stop()
