"""Registry behaviour through the SDK, in-process and over HTTP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelyard.client import Client
from modelyard.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from modelyard.workspace import Workspace


def test_log_model_versions_aliases_and_load(
    client: Client, logreg: object, training_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = training_data
    v1 = client.log_model(logreg, "fraud", input_example=X[:5], alias="champion")
    v2 = client.log_model(logreg, "fraud", input_example=X[:5], description="second")
    assert (v1.version, v2.version) == (1, 2)
    assert v1.aliases == ["champion"]
    assert v1.format == "sklearn"
    assert [i["name"] for i in v1.signature["inputs"]] == ["amount", "age", "score", "hour"]

    model = client.registry.get_model("fraud")
    assert model.latest_version == 2
    assert model.aliases == {"champion": 1}

    assert client.get_version("models:/fraud@champion").version == 1
    assert client.get_version("models:/fraud/2").version == 2
    assert client.get_version("models:/fraud/latest").version == 2
    assert client.get_version("models:/fraud").version == 2

    predictor = client.load_model("models:/fraud@champion")
    out = predictor.predict(X[:20])
    np.testing.assert_array_equal(out["predictions"], logreg.predict(X[:20]))  # type: ignore[attr-defined]

    client.set_alias("fraud", "champion", 2)
    assert client.get_version("models:/fraud@champion").version == 2
    assert client.registry.get_version("fraud", 1).aliases == []


def test_unknown_things_are_not_found(client: Client) -> None:
    with pytest.raises(NotFound, match="no model 'ghost'"):
        client.registry.get_model("ghost")
    with pytest.raises(NotFound):
        client.get_version("models:/ghost@champion")
    with pytest.raises(NotFound):
        client.load_model("models:/ghost/1")


def test_bad_uris_and_names_are_invalid(client: Client) -> None:
    with pytest.raises(InvalidInput, match="not a model URI"):
        client.get_version("models:/fraud/zero")
    with pytest.raises(InvalidInput, match="model name"):
        client.registry.create_model("has space")
    with pytest.raises(InvalidInput, match="alias"):
        client.registry.set_alias("fraud", "latest", 1)


def test_duplicate_model_is_refused_and_nothing_lost(client: Client) -> None:
    client.registry.create_model("dup", description="first", tags={"team": "risk"})
    with pytest.raises(AlreadyExists):
        client.registry.create_model("dup", description="second")
    model = client.registry.get_model("dup")
    assert model.description == "first"
    assert model.tags == {"team": "risk"}


def test_alias_on_missing_version_and_aliased_delete(
    client: Client, logreg: object, training_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = training_data
    client.log_model(logreg, "m", input_example=X[:5], alias="champion")
    with pytest.raises(NotFound, match="no version 7"):
        client.set_alias("m", "champion", 7)
    assert client.registry.get_alias("m", "champion").version == 1
    with pytest.raises(Conflict, match="champion"):
        client.registry.delete_version("m", 1)
    with pytest.raises(Conflict, match="champion"):
        client.registry.archive_version("m", 1)
    client.registry.delete_alias("m", "champion")
    with pytest.raises(NotFound, match="no alias"):
        client.registry.get_alias("m", "champion")
    client.registry.delete_version("m", 1)
    with pytest.raises(NotFound):
        client.registry.get_version("m", 1)


def test_unknown_manifest_digest_is_refused(client: Client) -> None:
    with pytest.raises(InvalidInput, match="no manifest"):
        client.registry.create_version("m", "sha256:" + "0" * 64)
    with pytest.raises(InvalidInput, match="not a digest"):
        client.registry.create_version("m", "sha256:xyz")
    with pytest.raises(NotFound):
        client.registry.get_model("m")  # nothing half-created


def test_tags_search_and_pagination(client: Client) -> None:
    for i in range(5):
        client.registry.create_model(
            f"model-{i}",
            tags={"team": "a" if i % 2 else "b"},
            description="churn" if i == 3 else "",
        )
    page = client.registry.list_models(limit=2)
    assert [m.name for m in page.items] == ["model-0", "model-1"]
    assert page.next_page_token
    page2 = client.registry.list_models(limit=2, page_token=page.next_page_token)
    assert [m.name for m in page2.items] == ["model-2", "model-3"]
    assert [m.name for m in client.registry.list_models(tags={"team": "a"}).items] == [
        "model-1",
        "model-3",
    ]
    assert [m.name for m in client.registry.list_models(q="churn").items] == ["model-3"]
    with pytest.raises(InvalidInput, match="page_token"):
        client.registry.list_models(page_token="garbage")

    updated = client.registry.update_model("model-0", tags={"tier": "gold"}, remove_tags=["team"])
    assert updated.tags == {"tier": "gold"}


def test_archive_then_delete_model(client: Client) -> None:
    client.registry.create_model("old")
    with pytest.raises(Conflict, match="archive it first"):
        client.registry.delete_model("old")
    client.registry.archive_model("old")
    assert "old" not in [m.name for m in client.registry.list_models().items]
    assert "old" in [m.name for m in client.registry.list_models(include_archived=True).items]
    client.registry.delete_model("old")
    with pytest.raises(NotFound):
        client.registry.get_model("old")


def test_model_card_generated_and_editable(
    client: Client, logreg: object, training_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = training_data
    client.log_model(logreg, "carded", input_example=X[:5])
    card = client.registry.get_card("carded", 1)
    assert "sklearn" in card.summary
    assert [i["name"] for i in card.signature["inputs"]] == ["amount", "age", "score", "hour"]
    edited = client.registry.update_card(
        "carded", 1, {"intended_use": "score card payments", "limitations": "EU only"}
    )
    assert edited.intended_use == "score card payments"
    assert edited.summary == card.summary  # untouched sections stay
    assert "EU only" in client.registry.get_card("carded", 1).to_markdown()
    with pytest.raises(InvalidInput, match="unknown model card section"):
        client.registry.update_card("carded", 1, {"colour": "red"})


def test_retention_keeps_aliased_and_newest(
    client: Client, logreg: object, training_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = training_data
    for _ in range(5):
        client.log_model(logreg, "r", input_example=X[:5])
    client.set_alias("r", "champion", 1)
    dry = client.registry.apply_retention("r", keep_last=2)
    assert dry.dry_run and dry.deleted == [3, 2]
    assert [v.version for v in client.registry.list_versions("r").items] == [5, 4, 3, 2, 1]
    done = client.registry.apply_retention("r", keep_last=2, dry_run=False)
    assert done.deleted == [3, 2]
    assert [v.version for v in client.registry.list_versions("r").items] == [5, 4, 1]
    assert client.log_model(logreg, "r", input_example=X[:5]).version == 6  # never reused
    with pytest.raises(InvalidInput, match="keep_last"):
        client.registry.apply_retention("r", keep_last=0)


def test_register_existing_version_under_new_name(
    client: Client, logreg: object, training_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = training_data
    v = client.log_model(logreg, "source-model", input_example=X[:5])
    copy = client.register_model("models:/source-model/1", "copy-model", alias="champion")
    assert copy.manifest_digest == v.manifest_digest
    assert copy.source == "models:/source-model/1"
    assert client.get_version("models:/copy-model@champion").version == 1


def test_every_change_is_audited(
    client: Client, logreg: object, training_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = training_data
    client.log_model(logreg, "audited", input_example=X[:5], alias="champion")
    actions = [r.action for r in client.audit.list(limit=10).items]
    assert actions[:3] == ["alias.set", "version.create", "model.create"]
    assert client.audit.verify().ok


def test_search_versions_by_run_and_by_dataset(
    workspace: Workspace, logreg: object, training_data: tuple[pd.DataFrame, pd.Series]
) -> None:
    X, _ = training_data
    client = Client(settings=workspace.settings)
    with client.start_run(experiment="lineage") as run:
        ds = client.log_dataset("train", X)
        trained = [
            client.log_model(logreg, name, input_example=X[:5], datasets=[{"dataset_id": ds.id}])
            for name in ("a", "b", "a")
        ]
    other = client.log_model(logreg, "a", input_example=X[:5])  # no run, no dataset
    client.close()
    by_run = workspace.registry.search_versions(run_id=run.id)
    assert [(v.model, v.version) for v in by_run.items] == [("a", 2), ("b", 1), ("a", 1)]
    first = workspace.registry.search_versions(dataset_id=ds.id, limit=2)
    rest = workspace.registry.search_versions(
        dataset_id=ds.id, limit=2, page_token=first.next_page_token
    )
    assert [v.id for v in first.items + rest.items] == [v.id for v in trained[::-1]]
    assert rest.next_page_token is None
    assert all(v.datasets for v in first.items)
    assert other.id not in {v.id for v in by_run.items}
    assert workspace.registry.search_versions(run_id="no-such-run").items == []
