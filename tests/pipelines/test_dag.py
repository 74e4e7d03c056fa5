"""Defining pipelines: decorators, builder and YAML agree; bad DAGs are refused at definition;
hashing and storing values for the step cache."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypedDict

import numpy as np
import pandas as pd
import pytest

from modelyard.artifacts import ArtifactStore
from modelyard.errors import InvalidInput, NotFound
from modelyard.pipelines import Output, Param, Pipeline, StepContext, load_yaml, pipeline, step
from modelyard.pipelines.cache import (
    code_hash,
    load_output,
    store_outputs,
    value_hash,
)


@step(stage="ingest")
def load(rows: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"x": range(rows)})


@step(stage="preprocess")
def double(df: pd.DataFrame) -> pd.DataFrame:
    return df * 2


@step(stage="preprocess", retries=2, timeout=30)
def shift(df: pd.DataFrame, by: int = 1) -> pd.DataFrame:
    return df + by


@step(stage="evaluate")
def score(a: pd.DataFrame, b: pd.DataFrame, ctx: StepContext) -> dict[str, float]:
    return {"total": float(a.x.sum() + b.x.sum())}


@step
def count(df: pd.DataFrame) -> int:
    return len(df)


@step
def half(n: float) -> float:
    return n / 2


@pipeline(name="diamond")
def diamond(rows: int = 4):
    df = load(rows)
    score(double(df), shift(df, by=3))


def test_decorated_pipeline_traces_the_dag_and_its_params() -> None:
    assert isinstance(diamond, Pipeline)
    assert diamond.order() == ["load", "double", "shift", "score"]
    assert diamond.params == {"rows": 4}
    assert diamond.steps["score"].upstream == ["double", "shift"]
    assert diamond.steps["score"].context_arg == "ctx"
    assert diamond.steps["shift"].options.retries == 2
    assert diamond.steps["shift"].inputs == {"df": Output("load"), "by": 3}
    assert diamond.downstream("load") == {"double", "shift", "score"}
    # Outside a pipeline definition a step is the plain function.
    assert count(pd.DataFrame({"x": [1, 2]})) == 2


def test_builder_yaml_and_decorator_define_the_same_pipeline(tmp_path: Path) -> None:
    p = Pipeline("diamond")
    df = p.add(load, rows=Param("rows", 4))
    p.add(score, a=p.add(double, df=df), b=p.add(shift, df=df, by=3))
    assert p.describe() == diamond.describe()

    mod = __name__
    (tmp_path / "diamond.yaml").write_text(
        f"""
name: diamond
params: {{rows: 4}}
steps:
  - {{name: load, function: "{mod}:load", inputs: {{rows: "${{params.rows}}"}}}}
  - {{name: double, function: "{mod}:double", inputs: {{df: "${{steps.load}}"}}}}
  - name: shift
    function: {mod}:shift
    inputs: {{df: "${{steps.load}}", by: 3}}
  - name: score
    function: {mod}:score
    inputs: {{a: "${{steps.double}}", b: "${{steps.shift}}"}}
"""
    )
    from_yaml = load_yaml(tmp_path / "diamond.yaml")
    assert from_yaml.describe() == diamond.describe()
    # Options come from the decorator unless the file overrides them.
    assert from_yaml.steps["shift"].options.retries == 2
    assert from_yaml.steps["load"].options.stage == "ingest"


def test_a_step_called_twice_in_a_pipeline_gets_numbered_names() -> None:
    @pipeline
    def twice():
        df = load(3)
        double(double(df))

    assert twice.order() == ["load", "double", "double_2"]
    assert twice.name == "twice"


def test_cycle_is_refused_naming_the_steps() -> None:
    p = Pipeline("loop")
    p.add(double, name="a", df=Output("b"))  # a forward reference is fine...
    with pytest.raises(InvalidInput, match=r"step 'a' depends on itself: a -> b -> a"):
        p.add(double, name="b", df=Output("a"))  # ...until it closes a loop
    assert list(p.steps) == ["a"]


def test_missing_and_unknown_inputs_are_refused() -> None:
    p = Pipeline("p")
    with pytest.raises(InvalidInput, match=r"step 'double': required input 'df' is not wired"):
        p.add(double)
    with pytest.raises(InvalidInput, match=r"step 'double': .*has no argument 'frame'"):
        p.add(double, df=Output("x"), frame=1)
    with pytest.raises(InvalidInput, match=r"'ctx' receives the StepContext"):
        p.add(score, a=1, b=2, ctx=3)
    p.add(double, df=Output("nowhere"))
    with pytest.raises(InvalidInput, match=r"step 'double': input 'df' refers to step 'nowhere'"):
        p.validate()


def test_duplicate_step_names_are_refused() -> None:
    p = Pipeline("p")
    p.add(load)
    with pytest.raises(InvalidInput, match=r"step 'load' is defined twice"):
        p.add(load)
    with pytest.raises(InvalidInput, match=r"step 'load' is defined twice"):
        p.add(count, name="load", df=Output("load"))


def test_type_mismatch_between_output_and_input_is_refused() -> None:
    p = Pipeline("p")
    df = p.add(load)
    n = p.add(count, df=df)
    with pytest.raises(
        InvalidInput,
        match=r"step 'double': input 'df' expects pandas.DataFrame but step 'count' "
        r"returns int",
    ):
        p.add(double, df=n)
    p.add(half, n=n)  # an int feeds a float (PEP 484's numeric tower)
    with pytest.raises(
        InvalidInput, match=r"step 'count_2': input 'df' expects .*DataFrame, got int"
    ):
        p.add(count, name="count_2", df=3)
    with pytest.raises(InvalidInput, match=r"parameter 'rows' is int"):

        @pipeline
        def wrong(rows: int = 3):
            double(rows)


class Split(TypedDict):
    train: pd.DataFrame
    size: int


def split(df: pd.DataFrame) -> Split:
    return {"train": df, "size": len(df)}


def pair(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    return df, len(df)


def test_item_types_are_checked_through_typed_dicts_and_tuples() -> None:
    p = Pipeline("p")
    df = p.add(load)
    parts = p.add(split, df=df)
    p.add(double, df=parts["train"])
    with pytest.raises(InvalidInput, match=r"input 'df' expects .*DataFrame but step 'split'"):
        p.add(double, name="bad", df=parts["size"])

    @pipeline
    def unpacked():
        frame, size = step(pair)(load())
        double(frame)
        half(size)

    assert unpacked.steps["double"].inputs == {"df": Output("pair", 0)}


def test_bad_definitions_say_what_to_fix() -> None:
    with pytest.raises(InvalidInput, match=r"stage 'training' is not one of ingest"):
        step(stage="training")(count)
    with pytest.raises(InvalidInput, match=r"retries must be a whole number"):
        step(retries=-1)(count)
    with pytest.raises(InvalidInput, match=r"pipeline name 'no spaces' is not valid"):
        Pipeline("no spaces")
    with pytest.raises(InvalidInput, match=r"has no value while the pipeline is being defined"):

        @pipeline
        def branching(rows: int = 3):
            if rows:  # Python logic on a placeholder
                load(rows)

    p = Pipeline("p")
    with pytest.raises(InvalidInput, match=r"nests step outputs"):
        p.add(count, df=[p.add(load)])
    with pytest.raises(InvalidInput, match=r"has no steps"):
        Pipeline("empty").validate()
    p.add(count, df=Output("load"))
    with pytest.raises(InvalidInput, match=r"has no parameter nope"):
        p.resolve_params({"nope": 1})
    needs = Pipeline("needs")
    needs.add(load, rows=Param("rows"))
    with pytest.raises(InvalidInput, match=r"needs parameter rows"):
        needs.resolve_params({})


def test_yaml_errors_name_the_step_or_the_key(tmp_path: Path) -> None:
    def write(text: str) -> Path:
        path = tmp_path / "p.yaml"
        path.write_text(text)
        return path

    mod = __name__
    with pytest.raises(InvalidInput, match=r"step 'b': input 'df' refers to step 'nope'"):
        load_yaml(
            write(
                f'steps: [{{name: b, function: "{mod}:double", inputs: {{df: "${{steps.nope}}"}}}}]'
            )
        )
    with pytest.raises(InvalidInput, match=r"step 'a' depends on itself"):
        load_yaml(
            write(
                f"""steps:
  - {{name: a, function: "{mod}:double", inputs: {{df: "${{steps.b}}"}}}}
  - {{name: b, function: "{mod}:double", inputs: {{df: "${{steps.a}}"}}}}
"""
            )
        )
    with pytest.raises(InvalidInput, match=r"step 'double' is defined twice"):
        load_yaml(
            write(
                f"""steps:
  - {{function: "{mod}:load"}}
  - {{function: "{mod}:double", inputs: {{df: "${{steps.load}}"}}}}
  - {{function: "{mod}:double", inputs: {{df: "${{steps.load}}"}}}}
"""
            )
        )
    with pytest.raises(InvalidInput, match=r"references are a whole string"):
        load_yaml(
            write(f'steps: [{{function: "{mod}:load", inputs: {{rows: "n=${{params.n}}"}}}}]')
        )
    with pytest.raises(InvalidInput, match=r"unknown key\(s\) retry"):
        load_yaml(write(f'steps: [{{function: "{mod}:load", retry: 2}}]'))
    with pytest.raises(NotFound, match=r"has no 'missing'"):
        load_yaml(write(f'steps: [{{function: "{mod}:missing"}}]'))
    with pytest.raises(NotFound, match=r"no pipeline file"):
        load_yaml(tmp_path / "absent.yaml")


# --- hashing and storing ----------------------------------------------------------------


def test_code_hash_follows_the_code_not_the_name() -> None:
    def make(k: int):  # type: ignore[no-untyped-def]
        def add(x: int) -> int:
            return x + k

        return add

    def add(x: int) -> int:
        return x + 2

    assert code_hash(make(1)) == code_hash(make(1))
    assert code_hash(make(1)) != code_hash(make(2))  # same source, other closure value
    assert code_hash(make(2)) != code_hash(add)  # same name, other code
    assert code_hash(load.fn) == code_hash(load.fn)


def test_value_hash_is_by_content() -> None:
    a = pd.DataFrame({"x": [1, 2, 3], "y": ["a", "b", "c"]})
    assert value_hash(a) == value_hash(a.copy())
    assert value_hash(a) != value_hash(a.astype({"x": "float64"}))  # dtype is part of it
    assert value_hash(a) != value_hash(a.iloc[::-1])
    assert value_hash(np.arange(3)) == value_hash(np.arange(3))
    assert value_hash(np.arange(3)) != value_hash(np.arange(3).astype("int32"))
    assert value_hash({"a": 1, "b": [1, 2]}) == value_hash({"b": [1, 2], "a": 1})
    assert value_hash(1) != value_hash(1.0) != value_hash(True)
    assert value_hash({1, 2}) == value_hash({1, 2})  # not JSON: by pickle


def test_outputs_round_trip_through_the_artifact_store(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    frame = pd.DataFrame({"x": [1.5, 2.5]}, index=pd.Index([10, 20], name="id"))
    cases = [
        (frame, "parquet"),
        (np.arange(6).reshape(2, 3), "npy"),
        ({"accuracy": 0.9, "n": 3}, "json"),
        (list(range(1000)), "json"),  # over the inline limit: a blob
        ({1, 2, 3}, "pickle"),
    ]
    for value, fmt in cases:
        outputs = store_outputs(store, value)
        assert outputs["kind"] == "value" and outputs["refs"]["value"]["format"] == fmt
        back = load_output(store, outputs)
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(back, value)
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(back, value)
        else:
            assert back == value
    assert "inline" in store_outputs(store, {"accuracy": 0.9})["refs"]["value"]

    mixed = {"train": frame, "model": {1, 2}}
    outputs = store_outputs(store, mixed)
    assert outputs["kind"] == "dict"
    assert {k: r["format"] for k, r in outputs["refs"].items()} == {
        "train": "parquet",
        "model": "pickle",
    }
    pd.testing.assert_frame_equal(load_output(store, outputs, "train"), frame)
    assert load_output(store, store_outputs(store, (frame, 3)), 1) == 3


def test_code_hash_follows_edits_to_the_body_but_not_the_decorator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # each reload reads the edit
    module = tmp_path / "edited_steps.py"

    def load_version(decorator: str, body: str):  # type: ignore[no-untyped-def]
        module.write_text(
            f"from modelyard.pipelines import step\n\n{decorator}\ndef f(x):\n    {body}\n"
        )
        import edited_steps

        return code_hash(importlib.reload(edited_steps).f.fn)

    first = load_version("@step(retries=1)", "return x + 1")
    assert load_version("@step(\n    retries=5,\n    timeout=9,\n)", "return x + 1") == first
    assert load_version("@step(retries=1)", "return x + 2") != first


def test_a_trigger_description_is_dropped_when_the_pipeline_does_not_take_it() -> None:
    assert diamond.resolve_params({"rows": 2, "trigger": {"kind": "alert"}}) == {"rows": 2}
    with pytest.raises(InvalidInput, match="no parameter colour"):
        diamond.resolve_params({"colour": "red"})
