"""Which runtime serves a version: ONNX Runtime when it predicts identically, else native.

The comparison runs once per version and is recorded on it in the registry. Endpoints run it
when they are created or changed, so a gateway starting up only reads the record; a version
that arrives later (an alias moved) is checked by the gateway's background refresh.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from modelyard.registry import ModelVersion, VersionRuntime

if TYPE_CHECKING:
    from modelyard.workspace import Workspace

CONVERTIBLE = {"sklearn", "xgboost", "lightgbm"}


def check_onnx(ws: Workspace, version: ModelVersion) -> VersionRuntime:
    """Convert a version to ONNX, compare predictions, and record the outcome on the version."""
    from modelyard.formats.onnx_runtime import convert

    result = convert(ws.registry.local_path(version), trusted=ws.settings.trust_pickled_models)
    if str(result.report.get("error", "")).startswith("cannot load the model: UntrustedModel"):
        # A pickled model (MLflow's sklearn flavor, say) in a process without trust: not a
        # verdict on the model, so nothing is recorded; a trusting `serve` checks it itself.
        return VersionRuntime(
            model=version.model,
            version=version.version,
            runtime="onnx",
            status="failed",
            report=result.report,
            created_at=datetime.now(UTC),
        )
    digest = ws.artifacts.put_bytes(result.onnx_bytes) if result.onnx_bytes else None
    return ws.registry.record_runtime(
        version.model,
        version.version,
        "onnx",
        status=result.status,
        artifact_digest=digest,
        report=result.report,
    )


def choose_runtime(ws: Workspace, preference: str, version: ModelVersion) -> str:
    """``"onnx"`` when allowed and the recorded (or a new) check says identical, else native."""
    return resolve_runtime(ws, preference, version)[0]


def resolve_runtime(
    ws: Workspace, preference: str, version: ModelVersion
) -> tuple[str, str | None]:
    """The runtime :func:`choose_runtime` picks, and the digest of its ONNX file if "onnx"."""
    if preference == "native" or version.format not in CONVERTIBLE:
        return "native", None
    recorded = ws.registry.get_runtime(version.model, version.version, "onnx")
    if recorded is None:
        recorded = check_onnx(ws, version)
    return ("onnx", recorded.artifact_digest) if recorded.usable else ("native", None)
