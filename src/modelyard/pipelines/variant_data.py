"""The data a variant is measured and trained on (see :mod:`modelyard.pipelines.variants`).

The holdout is the parent's dataset linked as test, evaluation or validation; without one, a
seeded 20 % split of its training dataset, said so in the notes (a student then trains on
the other rows). The target is the column named, else the only one that is not an input of
the model. Rows come out as the model takes them: its input columns, or one array.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modelyard.errors import InvalidInput, NotFound
from modelyard.registry.entities import DatasetLink, ModelVersion

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

    from modelyard.formats import Signature
    from modelyard.workspace import Workspace

#: Dataset roles that hold out data from training, in the order one is chosen.
HOLDOUT_ROLES = ("test", "evaluation", "validation")
SPLIT_FRACTION = 0.2
SPLIT_SEED = 0
#: Students train on at most this many rows (a seeded sample of a larger training set).
MAX_TRAIN_ROWS = 200_000


@dataclass
class VariantData:
    """The holdout (features and target) and, for distillation, the training features."""

    holdout: Any  # what the predictors take: a DataFrame of the input columns, or an array
    y: npt.NDArray[Any]
    target: str
    description: str
    is_split: bool
    train: Any | None
    train_description: str
    links: list[DatasetLink]
    notes: list[str]


def _load(ws: Workspace, link: DatasetLink) -> tuple[pd.DataFrame, str]:
    ds = ws.tracking.get_dataset_by_id(link.dataset_id)
    label = f"{ds.name} v{ds.version} ({link.role})"
    try:
        return ws.tracking.load_dataset(ds.name, ds.version), label
    except NotFound as exc:
        raise InvalidInput(f"cannot read dataset {label}: {exc.detail}") from None


def _target(frame: pd.DataFrame, signature: Signature, target: str | None, label: str) -> str:
    """The target column: the one given, else the only column that is not an input."""
    inputs = {spec.name for spec in signature.inputs}
    if target is not None:
        if target not in frame.columns:
            raise InvalidInput(
                f"dataset {label} has no column {target!r}; its columns: "
                f"{', '.join(map(str, frame.columns))}"
            )
        if signature.kind == "columns" and target in inputs:
            raise InvalidInput(f"{target!r} is an input of the model, not its target")
        return target
    if signature.kind != "columns":
        raise InvalidInput(
            "the model takes a bare array, so its target cannot be told from its inputs in "
            f"dataset {label}; name the target column (target=..., --target COLUMN)"
        )
    others = [str(c) for c in frame.columns if c not in inputs]
    if len(others) == 1:
        return others[0]
    if not others:
        raise InvalidInput(
            f"dataset {label} holds only the model's inputs: it needs the target column "
            "(the true answers) to measure quality"
        )
    raise InvalidInput(
        f"dataset {label} has several columns besides the model's inputs "
        f"({', '.join(others)}); name the target column (target=..., --target COLUMN)"
    )


def _features(frame: pd.DataFrame, signature: Signature, target: str, label: str) -> Any:
    """The rows of ``frame`` as the model takes them."""
    if signature.kind == "columns":
        names = [spec.name for spec in signature.inputs]
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise InvalidInput(
                f"dataset {label} lacks the model's input column(s) {', '.join(missing)}"
            )
        return frame[names].reset_index(drop=True)
    spec = signature.inputs[0]
    matrix = frame.drop(columns=[target], errors="ignore").to_numpy()
    if spec.shape[1:] and spec.shape[1] not in (-1, matrix.shape[1]):
        raise InvalidInput(
            f"the model takes {spec.shape[1]} features but dataset {label} has "
            f"{matrix.shape[1]} columns besides {target!r}"
        )
    try:
        return matrix.astype(spec.dtype)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"dataset {label} is not {spec.dtype} throughout: {exc}") from None


def variant_data(
    ws: Workspace, parent: ModelVersion, signature: Signature, target: str | None, distill: bool
) -> VariantData:
    """The holdout of ``parent`` and, with ``distill``, its training rows; InvalidInput
    saying what to link or name when they are missing."""
    import numpy as np

    training = next((d for d in parent.datasets if d.role == "training"), None)
    holdout_link = next(
        (d for role in HOLDOUT_ROLES for d in parent.datasets if d.role == role), None
    )
    if distill and training is None:
        raise InvalidInput(
            f"{parent.uri} has no training dataset linked: distillation trains the student on "
            "the parent's answers on it. Register the parent with its training dataset "
            "(datasets=[{'dataset_id': ..., 'role': 'training'}], or "
            "`modelyard models register ... --dataset ID:training`)"
        )
    if holdout_link is None and training is None:
        raise InvalidInput(
            f"{parent.uri} has no dataset linked to measure quality on; register it with a "
            "test dataset (role test, evaluation or validation) or its training dataset"
        )
    notes: list[str] = []
    train_frame: pd.DataFrame | None = None
    train_label = ""
    if training is not None and (distill or holdout_link is None):
        train_frame, train_label = _load(ws, training)
    if holdout_link is not None:
        holdout_frame, label = _load(ws, holdout_link)
        description, is_split = label, False
    else:
        assert train_frame is not None
        order = np.random.default_rng(SPLIT_SEED).permutation(len(train_frame))
        cut = max(1, round(len(train_frame) * SPLIT_FRACTION))
        if len(train_frame) - cut < 2 and distill:
            raise InvalidInput(f"training dataset {train_label} has too few rows to split")
        holdout_frame = train_frame.iloc[order[:cut]]
        train_frame = train_frame.iloc[order[cut:]]
        description = (
            f"a {SPLIT_FRACTION:.0%} split of {train_label} ({cut} of {len(order)} rows, "
            f"seed {SPLIT_SEED})"
        )
        is_split = True
        notes.append(
            f"{parent.uri} has no test, evaluation or validation dataset: quality is measured "
            f"on {description}. The parent saw those rows in training, so its numbers are "
            "optimistic" + ("; the student was trained on the other rows" if distill else "")
        )
    chosen = _target(holdout_frame, signature, target, description)
    labelled = holdout_frame[holdout_frame[chosen].notna()]
    if labelled.empty:
        raise InvalidInput(f"{description} has no row with a value in {chosen!r}")
    if len(labelled) < len(holdout_frame):
        notes.append(f"{len(holdout_frame) - len(labelled)} holdout rows without a target left out")
    train = None
    if distill:
        assert train_frame is not None
        if len(train_frame) > MAX_TRAIN_ROWS:
            notes.append(
                f"the student was trained on {MAX_TRAIN_ROWS:,} of {len(train_frame):,} "
                f"training rows (seed {SPLIT_SEED})"
            )
            train_frame = train_frame.sample(MAX_TRAIN_ROWS, random_state=SPLIT_SEED)
        train = _features(train_frame, signature, chosen, train_label)
    return VariantData(
        holdout=_features(labelled, signature, chosen, description),
        y=labelled[chosen].to_numpy(),
        target=chosen,
        description=description,
        is_split=is_split,
        train=train,
        train_description=train_label,
        links=list(parent.datasets),
        notes=notes,
    )


def take_rows(data: Any, index: npt.NDArray[Any]) -> Any:
    """Rows of the holdout as the gateway hands them to a model: columns, or an array."""
    if hasattr(data, "iloc"):
        return {str(c): data[c].to_numpy()[index] for c in data.columns}
    return data[index]


def cycle(rows: int, n: int, *, start: int = 0) -> npt.NDArray[np.intp]:
    """``n`` row indices from ``start``, wrapping around ``rows`` rows."""
    import numpy as np

    return (np.arange(start, start + n) % rows).astype(np.intp)
