"""The OpenAPI document is the contract: every operation, every schemathesis check, a real server.

schemathesis reads ``/openapi.json`` from a control plane on 127.0.0.1 (a workspace holding a
model with versions and an alias, an endpoint, a project, an experiment with a run) and sends
each operation generated requests: positive and negative ones from the schema (coverage
phase: boundaries, wrong types, missing fields, undeclared methods) and random ones (fuzzing).
Every response must pass every check: no 5xx, only documented statuses and content types,
bodies matching their schemas, invalid input refused, valid input accepted, 405 with
``Allow``... The examples are bounded and derandomized so that a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
import pandas as pd
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from sklearn.linear_model import LogisticRegression

from modelyard.config import Settings
from modelyard.page import encode_token
from modelyard.workspace import Workspace
from tests.conftest import LiveServer

#: Generated requests per operation in the fuzzing phase (the coverage phase adds its own).
EXAMPLES = 15
AUTH_EXAMPLES = 3


def _seed(ws: Workspace) -> None:
    """Things for requests to find: most of schemathesis's names are new, some are these."""
    from modelyard.client import Client

    client = Client(str(ws.settings.resolved_home), settings=ws.settings)
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 3)), columns=["amount", "age", "score"])
    model = LogisticRegression().fit(X, X.amount > 0)
    ws.projects.create("fraud", objective="catch fraud")
    with client.start_run("fraud", params={"C": 1.0}) as run:
        client.log_metric("accuracy", 0.9)
        client.log_model(model, "fraud", input_example=X[:5], alias="champion", run_id=run.id)
    client.log_model(model, "fraud", input_example=X[:5])
    ws.endpoints.create("fraud", "models:/fraud@champion")
    client.close()


def _serve(tmp: Path, *, auth: bool) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    """A seeded control plane, and the headers of an admin (none needed with auth off)."""
    from modelyard.api.app import create_app

    ws = Workspace.open(Settings(home=tmp / "home", auth=auth))
    _seed(ws)
    headers = {}
    if auth:
        ws.identities.create_user("root", "admin")
        headers["Authorization"] = "Bearer " + ws.identities.create_token("root").secret
    server = LiveServer(create_app(workspace=ws))
    yield server, headers
    server.stop()
    ws.close()


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    for server, _ in _serve(tmp_path_factory.mktemp("contract"), auth=False):
        yield server


@pytest.fixture(scope="module")
def auth_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    yield from _serve(tmp_path_factory.mktemp("contract-auth"), auth=True)


def _document(*, auth: bool = False) -> dict[str, Any]:
    """The control plane's OpenAPI document, as a server with ``auth`` serves it."""
    from modelyard.api.app import create_app

    return create_app(Settings(home=Path("unused"), auth=auth)).openapi()


# Validity that JSON Schema cannot state: for these operations a request the schema allows may
# still be refused with 422, rightly. positive_data_acceptance (valid input is accepted) holds
# for every other operation; here it also takes 422. Every other check is unchanged.
_NOT_IN_A_SCHEMA = {
    # the body must hash to the digest in the path
    "PUT /api/v1/artifacts/{digest}": "content",
    # the manifest must be stored with its files, and describe a model that loads
    "POST /api/v1/models/{name}/versions": "state",
    # exactly one of quantize or distill; the version needs linked datasets and a graph that
    # quantises (neural networks), or a training dataset to distill on
    "POST /api/v1/models/{name}/versions/{version}/variants": "cross-field, state",
    # a public key to trust must be an Ed25519 key in PEM
    "POST /api/v1/keys": "content",
    # the uploaded file must be Parquet or CSV
    "POST /api/v1/datasets": "content",
    # reference rows must fit the model's signature
    "POST /api/v1/monitoring/references": "state",
    # a label must be of the kind the model predicts
    "POST /api/v1/monitoring/endpoints/{endpoint}/feedback": "state",
    # the metric must fit the kind; the window must be one the endpoint's monitor keeps
    "POST /api/v1/monitoring/rules": "cross-field, state",
    "PATCH /api/v1/monitoring/rules/{name}": "cross-field, state",
    # the fields a trigger takes depend on its kind; cron syntax
    "POST /api/v1/triggers": "cross-field",
    "PATCH /api/v1/triggers/{name}": "cross-field",
    # the source must import a pipeline
    "POST /api/v1/pipelines": "content",
    # start must come before end; the window must be one the endpoint's monitor keeps
    "GET /api/v1/monitoring/endpoints/{endpoint}/drift": "cross-field, state",
    "GET /api/v1/monitoring/endpoints/{endpoint}/drift.html": "cross-field, state",
    "GET /api/v1/monitoring/endpoints/{endpoint}/operations": "cross-field, state",
    "GET /api/v1/monitoring/endpoints/{endpoint}/performance": "cross-field, state",
    "GET /api/v1/monitoring/endpoints/{endpoint}/feedback": "cross-field",
    "GET /api/v1/monitoring/kpis": "state",
    # a limit needs a scope (endpoint, token) and a rate or a quota; burst goes with a rate;
    # a rate as text is N/s, N/m or N/h within bounds
    "PUT /api/v1/limits": "cross-field",
    # hashing a column needs MODELYARD_REDACTION_KEY on the server; redacted and guarded
    # columns must be inputs of the model
    "POST /api/v1/endpoints": "state",
    "PATCH /api/v1/endpoints/{name}": "state",
    # steps must increase; a sticky key is a header or a field; the endpoint must serve
    # another version, follow an alias of the same model for finish=alias, have no rollout
    # running and no hand-made split
    "POST /api/v1/rollouts": "cross-field, state",
}
_ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


def _config(*, examples: int, coverage: bool) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "checks": {"enabled": True},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": coverage},
                "fuzzing": {"enabled": True},
            },
            "generation": {"max-examples": examples, "deterministic": True},
            # Half the names and versions are the seeded ones, so that requests get past the
            # lookup into the code behind it; the other half are generated.
            "dictionaries": {
                "names": {"values": ["fraud"]},
                "versions": {"values": [1, 2]},
                "aliases": {"values": ["champion"]},
            },
            "parameters": {
                **{
                    f"path.{name}": {"dictionary": "names", "probability": 0.5}
                    for name in ("name", "endpoint", "name_or_id", "ref")
                },
                "path.version": {"dictionary": "versions", "probability": 0.5},
                "path.alias": {"dictionary": "aliases", "probability": 0.5},
                # Values only the server can make valid: an issued page token, and the run
                # search grammar (tested in tests/tracking).
                "query.page_token": encode_token(0),
                "query.filter": "metrics.accuracy > 0.5",
                "query.order_by": "metrics.accuracy desc",
            },
            "operations": [
                {
                    "include-name": name,
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": [*_ACCEPTED, "422"]}
                    },
                }
                for name in _NOT_IN_A_SCHEMA
            ],
        }
    )


# Loaded at collection, so that each operation is its own test; the requests go to the live
# server (test_served_document_is_the_one_tested checks it serves this same document).
schema = schemathesis.openapi.from_dict(
    _document(), config=_config(examples=EXAMPLES, coverage=True)
)
# With auth on, fewer examples: what this adds is ignored_auth (each operation that answers a
# token with 2xx answers no token, and a wrong one, with 401) and the 401/403 declarations.
auth_schema = schemathesis.openapi.from_dict(
    _document(auth=True), config=_config(examples=AUTH_EXAMPLES, coverage=False)
)


def test_served_document_is_the_one_tested(contract_server: LiveServer) -> None:
    import httpx

    assert httpx.get(contract_server.url + "/openapi.json").json() == _document()


def test_served_document_with_auth_is_the_one_tested(
    auth_server: tuple[LiveServer, dict[str, str]],
) -> None:
    import httpx

    server, _ = auth_server
    assert httpx.get(server.url + "/openapi.json").json() == _document(auth=True)


@schema.parametrize()
@hypothesis.settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_every_operation_keeps_the_contract(case: Any, contract_server: LiveServer) -> None:
    case.call_and_validate(base_url=contract_server.url)


@auth_schema.parametrize()
@hypothesis.settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_every_operation_needs_a_token_when_auth_is_on(
    case: Any, auth_server: tuple[LiveServer, dict[str, str]]
) -> None:
    server, headers = auth_server
    case.call_and_validate(base_url=server.url, headers=headers)
