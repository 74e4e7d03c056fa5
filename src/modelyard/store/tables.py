"""Metadata tables, one section per domain.

A domain reads and writes only its own section; other domains go through its service.
Alembic migrations under ``migrations/versions`` must match these definitions
(``tests/store/test_migrations.py`` checks it).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database.

    SQLite keeps no time zone and hands back naive values; this type stores UTC and always
    returns aware UTC datetimes, so no domain has to repair them.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


# --- projects ---------------------------------------------------------------------------


class ProjectRow(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    objective: Mapped[str] = mapped_column(Text, default="")
    kpis: Mapped[list[Any]] = mapped_column(default=list)
    constraints: Mapped[list[Any]] = mapped_column(default=list)
    stakeholders: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


# --- registry ---------------------------------------------------------------------------


class RegisteredModelRow(Base):
    __tablename__ = "registered_models"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"), index=True)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    # Versions are numbered from this counter under a row lock, so concurrent
    # registrations get consecutive numbers with no gap and no duplicate.
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256), default="")


class ModelTagRow(Base):
    __tablename__ = "registered_model_tags"
    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_versions_number"),)
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    manifest_digest: Mapped[str] = mapped_column(String(80))
    format: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict[str, Any]]
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="ready")  # ready | archived
    run_id: Mapped[str | None] = mapped_column(String(26), index=True)
    source: Mapped[str] = mapped_column(Text, default="")
    card: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256), default="")


class ModelVersionTagRow(Base):
    __tablename__ = "model_version_tags"
    version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")


class ModelVersionDatasetRow(Base):
    """Lineage: which registered datasets a version was trained or evaluated on."""

    __tablename__ = "model_version_datasets"
    # the versions trained on a dataset (the dataset page); the key starts with version_id
    __table_args__ = (Index("ix_model_version_datasets_dataset", "dataset_id"),)
    version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    dataset_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    role: Mapped[str] = mapped_column(String(32), primary_key=True, default="training")


class ModelAliasRow(Base):
    __tablename__ = "model_aliases"
    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(256), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]


# --- tracking ---------------------------------------------------------------------------


class ExperimentRow(Base):
    __tablename__ = "experiments"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id"), index=True)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class ExperimentTagRow(Base):
    __tablename__ = "experiment_tags"
    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(256), default="")
    status: Mapped[str] = mapped_column(String(16), default="running")
    start_time: Mapped[datetime]
    end_time: Mapped[datetime | None]
    created_by: Mapped[str] = mapped_column(String(256), default="")
    #: Set by a delete (MLflow's lifecycle stage "deleted"); a restore clears it.
    deleted_at: Mapped[datetime | None] = mapped_column(default=None)


class RunParamRow(Base):
    __tablename__ = "run_params"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RunTagRow(Base):
    __tablename__ = "run_tags"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")


class MetricRow(Base):
    __tablename__ = "run_metrics"
    __table_args__ = (Index("ix_run_metrics_run_key_step", "run_id", "key", "step"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(256))
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    timestamp: Mapped[datetime]


class RunArtifactRow(Base):
    __tablename__ = "run_artifacts"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    digest: Mapped[str] = mapped_column(String(80))
    size: Mapped[int] = mapped_column(BigInteger)


class DatasetRow(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_datasets_name_version"),)
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(80))
    source: Mapped[str] = mapped_column(Text, default="")
    num_rows: Mapped[int] = mapped_column(BigInteger)
    schema_: Mapped[list[Any]] = mapped_column("schema")
    profile: Mapped[dict[str, Any]]
    artifact_digest: Mapped[str | None] = mapped_column(String(80))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256), default="")


class RunInputRow(Base):
    __tablename__ = "run_inputs"
    __table_args__ = (Index("ix_run_inputs_dataset", "dataset_id"),)  # a dataset's runs
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    context: Mapped[str] = mapped_column(String(32), primary_key=True, default="training")


class LoggedModelRow(Base):
    """A model logged in a run before (or without) registration: MLflow 3's logged model."""

    __tablename__ = "logged_models"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # m-<32 hex>, as MLflow's
    experiment_id: Mapped[str] = mapped_column(
        ForeignKey("experiments.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(256))
    source_run_id: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|ready|failed
    model_type: Mapped[str] = mapped_column(String(256), default="")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256), default="")


class LoggedModelArtifactRow(Base):
    __tablename__ = "logged_model_artifacts"
    model_id: Mapped[str] = mapped_column(
        ForeignKey("logged_models.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    digest: Mapped[str] = mapped_column(String(80))
    size: Mapped[int] = mapped_column(BigInteger)


# --- governance -------------------------------------------------------------------------


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class TokenRow(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # Endpoint names the token may predict on (and nothing else); NULL: not limited.
    endpoints: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


class RoleBindingRow(Base):
    """A role held by a user or a group on the workspace, a project or a model."""

    __tablename__ = "role_bindings"
    __table_args__ = (UniqueConstraint("subject", "role", "scope", name="uq_role_bindings_grant"),)
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    subject: Mapped[str] = mapped_column(String(300), index=True)  # user:NAME | group:NAME
    role: Mapped[str] = mapped_column(String(16))
    scope: Mapped[str] = mapped_column(String(300))  # workspace | project:NAME | model:NAME
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256), default="")


class AliasPolicyRow(Base):
    """Which aliases of a model (or of every model of a project) are protected, and what
    moving one requires."""

    __tablename__ = "alias_policies"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    scope: Mapped[str] = mapped_column(String(300), index=True)  # project:NAME | model:NAME
    aliases: Mapped[list[Any]]  # names or fnmatch patterns
    role: Mapped[str] = mapped_column(String(16))
    approvals: Mapped[int] = mapped_column(Integer)
    gates: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256), default="")


class AuditRow(Base):
    """One hash-chained record; ``seq`` orders the chain, ``hash`` covers ``prev_hash``."""

    __tablename__ = "audit_log"
    # one entity's history (an alias's moves) without walking the chain
    __table_args__ = (Index("ix_audit_log_entity", "entity_type", "entity_id", "seq"),)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    id: Mapped[str] = mapped_column(String(26), unique=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64), index=True)
    entity_type: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str] = mapped_column(String(512))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class VersionRuntimeRow(Base):
    """An optimised runtime checked for a version (e.g. ONNX): its file and how it compared."""

    __tablename__ = "version_runtimes"
    version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    runtime: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # identical | different | failed
    artifact_digest: Mapped[str | None] = mapped_column(String(80))
    report: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


# --- serving ----------------------------------------------------------------------------


class EndpointRow(Base):
    __tablename__ = "endpoints"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    target: Mapped[str] = mapped_column(String(1024))  # models:/name@alias or models:/name/3
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)  # split routes, shadow
    batching: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cache: Mapped[dict[str, Any]] = mapped_column(default=dict)
    runtime: Mapped[str] = mapped_column(String(16), default="auto")  # auto | native
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    timeout_ms: Mapped[int] = mapped_column(Integer, default=10_000)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256), default="")
    # input guard and redaction (0011): {policy, threshold}; {column: drop | hash | mask}
    guard: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    redact: Mapped[dict[str, Any] | None] = mapped_column(default=None)


# --- monitoring -------------------------------------------------------------------------


class PredictionSegmentRow(Base):
    """One Parquet segment of the prediction log, stored in the artifact store."""

    __tablename__ = "prediction_segments"
    __table_args__ = (Index("ix_prediction_segments_endpoint_start", "endpoint", "start_at"),)
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(256))
    start_at: Mapped[datetime]
    end_at: Mapped[datetime]
    rows: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime]


class AuditHeadRow(Base):
    """The newest record of the audit chain, in one row that appenders lock.

    Locking this row (SELECT ... FOR UPDATE) serialises appends in one round trip, and a
    waiter reads the head as its predecessor left it.
    """

    __tablename__ = "audit_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class ReferenceProfileRow(Base):
    """The reference profile of a model version: what its inputs and outputs looked like."""

    __tablename__ = "reference_profiles"
    version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    source: Mapped[str] = mapped_column(String(512), default="")  # dataset:name/3, data, ...
    rows: Mapped[int] = mapped_column(BigInteger)
    profile: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class WindowProfileRow(Base):
    """The profile of one endpoint version's traffic in one closed time window.

    Rebuilt whole from the log segments of its window, so writing it twice never counts a
    prediction twice.
    """

    __tablename__ = "window_profiles"
    __table_args__ = (
        UniqueConstraint(
            "endpoint",
            "model",
            "version",
            "granularity",
            "window_start",
            name="uq_window_profiles_window",
        ),
    )
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(256))
    model: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    granularity: Mapped[int] = mapped_column(Integer)  # seconds
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    rows: Mapped[int] = mapped_column(BigInteger)  # predicted rows
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    profile: Mapped[dict[str, Any]]  # inputs and outputs, plus latency
    updated_at: Mapped[datetime]


class MonitorWatermarkRow(Base):
    """How far the monitor has closed the windows of one endpoint at one granularity."""

    __tablename__ = "monitor_watermarks"
    endpoint: Mapped[str] = mapped_column(String(256), primary_key=True)
    granularity: Mapped[int] = mapped_column(Integer, primary_key=True)
    done_until: Mapped[datetime]
    updated_at: Mapped[datetime]
    # Labels received up to here have been seen by the closed windows they belong to
    # (the newest feedback ``received_at`` the late-label pass looked at); NULL: none yet.
    labels_until: Mapped[datetime | None]


class MonitorLeaseRow(Base):
    """Who runs the monitor loop now: one holder at a time, the lease expires if it dies."""

    __tablename__ = "monitor_leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]


class MonitorConfigRow(Base):
    """Per-endpoint monitoring settings (task, label output, drift thresholds, windows)."""

    __tablename__ = "monitor_configs"
    endpoint: Mapped[str] = mapped_column(String(256), primary_key=True)
    config: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime]


class FeedbackRow(Base):
    """Ground truth for one predicted row, joined at arrival to the logged prediction."""

    __tablename__ = "feedback"
    __table_args__ = (
        UniqueConstraint("endpoint", "request_id", "row", name="uq_feedback_prediction"),
        Index("ix_feedback_endpoint_predicted_at", "endpoint", "predicted_at"),
        Index("ix_feedback_endpoint_received_at", "endpoint", "received_at"),
    )
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(256))
    request_id: Mapped[str] = mapped_column(String(128))
    row: Mapped[int] = mapped_column(Integer, default=0)
    model: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    predicted_at: Mapped[datetime]
    label: Mapped[Any] = mapped_column(JSON)
    prediction: Mapped[dict[str, Any]]  # the logged outputs of that row
    features: Mapped[dict[str, Any]]  # the logged inputs of that row (for slices)
    revisions: Mapped[int] = mapped_column(Integer, default=1)
    received_at: Mapped[datetime]
    received_by: Mapped[str] = mapped_column(String(256), default="")


class PendingFeedbackRow(Base):
    """A label whose prediction is not in the log yet, held until it is (or until it expires).

    ``status``: ``pending`` while held; ``expired`` when no prediction appeared before
    ``expires_at``; ``rejected`` when the prediction appeared but the label does not fit it
    (``reason`` says why). Expired and rejected rows are kept a while so they can be listed.
    """

    __tablename__ = "pending_feedback"
    __table_args__ = (
        UniqueConstraint("endpoint", "request_id", "row", name="uq_pending_feedback_prediction"),
        Index("ix_pending_feedback_endpoint_status", "endpoint", "status"),
    )
    id: Mapped[str] = mapped_column(String(26), primary_key=True)  # new on every replacement
    endpoint: Mapped[str] = mapped_column(String(256))
    request_id: Mapped[str] = mapped_column(String(128))
    row: Mapped[int] = mapped_column(Integer, default=0)
    label: Mapped[Any] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str] = mapped_column(Text, default="")
    received_at: Mapped[datetime]
    received_by: Mapped[str] = mapped_column(String(256), default="")
    expires_at: Mapped[datetime]
    # The newest log segment (by ``created_at``) searched for it; NULL: none searched yet.
    searched_until: Mapped[datetime | None]


class KpiEvaluationRow(Base):
    """A project KPI measured on one endpoint window, and whether it missed its target."""

    __tablename__ = "kpi_evaluations"
    __table_args__ = (
        UniqueConstraint(
            "project_id",
            "kpi",
            "endpoint",
            "granularity",
            "window_start",
            name="uq_kpi_evaluations_window",
        ),
    )
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    kpi: Mapped[str] = mapped_column(String(256))
    endpoint: Mapped[str] = mapped_column(String(256))
    granularity: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime]
    value: Mapped[float | None] = mapped_column(Float)
    target: Mapped[float] = mapped_column(Float)
    breached: Mapped[bool | None] = mapped_column(Boolean)  # None: not measurable
    evaluated_at: Mapped[datetime]


class AlertRuleRow(Base):
    """A condition on an endpoint's windows that opens an alert when it holds."""

    __tablename__ = "alert_rules"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    endpoint: Mapped[str] = mapped_column(String(256), index=True)
    spec: Mapped[dict[str, Any]]  # kind, metric, feature, op, threshold, window, min_samples...
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256), default="")


class AlertRow(Base):
    """One firing of a rule: open until resolved, escalated when open too long."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_rule_status", "rule_id", "status"),)
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    rule_id: Mapped[str] = mapped_column(ForeignKey("alert_rules.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(String(256), index=True)
    status: Mapped[str] = mapped_column(String(16))  # open | escalated | resolved
    window_start: Mapped[datetime]
    value: Mapped[float | None] = mapped_column(Float)
    evidence: Mapped[dict[str, Any]]
    opened_at: Mapped[datetime]
    escalated_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str] = mapped_column(String(256), default="")
    notifications: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Someone is on it: escalation stops, the alert stays open until resolved.
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str] = mapped_column(String(256), default="", server_default="")


class LiveStatsRow(Base):
    """One gateway worker's recent counters of one endpoint (the dashboard's live charts);
    the worker rewrites its row every few seconds, a reader sums the workers' rows."""

    __tablename__ = "live_stats"
    __table_args__ = (Index("ix_live_stats_endpoint", "endpoint"),)
    worker: Mapped[str] = mapped_column(String(128), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(256), primary_key=True)
    updated_at: Mapped[datetime]
    samples: Mapped[list[Any]]


# --- pipelines --------------------------------------------------------------------------


class PipelineRow(Base):
    """A pipeline the platform can run on its own (triggers): where its definition lives."""

    __tablename__ = "pipelines"
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    source: Mapped[str] = mapped_column(String(1024))  # "package.module:attr" or a YAML path
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256), default="")


class PipelineRunRow(Base):
    """One run of a pipeline: why it started, how it went, and how long each stage took."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (Index("ix_pipeline_runs_pipeline_started", "pipeline", "started_at"),)
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16))  # running | succeeded | failed
    trigger: Mapped[dict[str, Any]]  # kind, event, by
    params: Mapped[dict[str, Any]]
    executor: Mapped[str] = mapped_column(String(32), default="local")
    tracking_run_id: Mapped[str | None] = mapped_column(String(26))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str] = mapped_column(Text, default="")
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)  # stage timings, outputs
    owner: Mapped[str] = mapped_column(String(128), default="")  # process running it
    heartbeat_at: Mapped[datetime | None]


class PipelineStepRow(Base):
    """One step of a pipeline run."""

    __tablename__ = "pipeline_steps"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_pipeline_steps_run_step"),)
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("pipeline_runs.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(
        String(16)
    )  # pending|running|succeeded|failed|cached|skipped
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cache_key: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    outputs: Mapped[dict[str, Any]] = mapped_column(default=dict)  # name -> stored value ref
    log: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")


class StepCacheRow(Base):
    """A step result kept by the hash of the step's code and inputs."""

    __tablename__ = "step_cache"
    cache_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(256))
    step: Mapped[str] = mapped_column(String(256))
    outputs: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class TriggerRow(Base):
    """What starts a pipeline on its own: a schedule, an alert, new data."""

    __tablename__ = "pipeline_triggers"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    pipeline: Mapped[str] = mapped_column(String(256), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # schedule | alert | dataset
    spec: Mapped[dict[str, Any]]  # cron / alert filter / dataset name, params, cooldown
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    cursor: Mapped[dict[str, Any]] = mapped_column(default=dict)  # last event seen
    last_fired_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256), default="")
    # Who its runs act as: whoever created or last changed it ({name, role, groups}); NULL
    # (older triggers): the local operator.
    acts_as: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class TriggerEventRow(Base):
    """One event a trigger saw, once: the run it started, or why it did not start one."""

    __tablename__ = "pipeline_trigger_events"
    __table_args__ = (
        UniqueConstraint("trigger_id", "event_key", name="uq_pipeline_trigger_events_event"),
    )
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    trigger_id: Mapped[str] = mapped_column(ForeignKey("pipeline_triggers.id", ondelete="CASCADE"))
    event_key: Mapped[str] = mapped_column(String(512))
    event_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))  # started | cooldown | failed
    run_id: Mapped[str | None] = mapped_column(String(26))
    detail: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]


class PromotionRow(Base):
    """A candidate checked by quality gates, and the alias it moved (or did not)."""

    __tablename__ = "promotions"
    __table_args__ = (
        Index("ix_promotions_model_decided", "model", "decided_at"),
        Index("ix_promotions_pipeline_run", "pipeline_run_id"),  # a pipeline run's promotions
    )
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    model: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    alias: Mapped[str] = mapped_column(String(64))
    previous_version: Mapped[int | None] = mapped_column(Integer)
    promoted: Mapped[bool] = mapped_column(Boolean)
    report: Mapped[dict[str, Any]]  # every gate with its verdict and evidence
    pipeline_run_id: Mapped[str | None] = mapped_column(String(26))
    triggered_at: Mapped[datetime | None]  # the event that led here (lead time)
    decided_at: Mapped[datetime]
    decided_by: Mapped[str] = mapped_column(String(256), default="")
    rolled_back_at: Mapped[datetime | None]
    #: The rollout that releases the candidate instead of an instant alias move (0012).
    rollout_id: Mapped[str | None] = mapped_column(String(26), default=None)


class ApprovalRow(Base):
    """A human sign-off a policy requires before a change (e.g. promotion to champion)."""

    __tablename__ = "approvals"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    subject: Mapped[str] = mapped_column(String(512), index=True)  # e.g. models:/fraud/4@champion
    status: Mapped[str] = mapped_column(String(16))  # pending | approved | rejected
    requested_by: Mapped[str] = mapped_column(String(256))
    requested_at: Mapped[datetime]
    decided_by: Mapped[str] = mapped_column(String(256), default="")
    decided_at: Mapped[datetime | None]
    note: Mapped[str] = mapped_column(Text, default="")
    context: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # How many distinct approvers it needs (a policy's N), and who approved so far.
    required: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    approved_by: Mapped[list[Any]] = mapped_column(default=list, server_default="[]")
    # An approval clears one move: when and by whom it was used (NULL: not yet).
    used_at: Mapped[datetime | None]
    used_by: Mapped[str | None] = mapped_column(String(256))


# --- governance: signing keys and model signatures ------------------------------------------


class SigningKeyRow(Base):
    """A trusted Ed25519 public key; revoked keys stay, so old signatures can be explained."""

    __tablename__ = "signing_keys"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # sha256(raw key)[:16]
    name: Mapped[str] = mapped_column(String(64), unique=True)
    public_key: Mapped[str] = mapped_column(Text)  # PEM (SubjectPublicKeyInfo)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256), default="")
    revoked_at: Mapped[datetime | None]


class ModelSignatureRow(Base):
    """The signature of one model version (its name, number and every digest)."""

    __tablename__ = "model_signatures"
    version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    key_id: Mapped[str] = mapped_column(String(16), index=True)  # may name an unknown key
    payload_digest: Mapped[str] = mapped_column(String(80))
    signature: Mapped[str] = mapped_column(String(128))  # base64 of the 64 signature bytes
    signed_at: Mapped[datetime]
    signed_by: Mapped[str] = mapped_column(String(256), default="")


# --- governance: prediction limits and their counters ---------------------------------------


class PredictionLimitRow(Base):
    """A rate limit and/or a daily row quota on the predictions of a token, an endpoint, or
    a token on one endpoint; ``scope`` names which, once."""

    __tablename__ = "prediction_limits"
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    # token:ID | endpoint:NAME | token:ID/endpoint:NAME
    scope: Mapped[str] = mapped_column(String(300), unique=True)
    endpoint: Mapped[str | None] = mapped_column(String(256))
    token_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    rate: Mapped[float | None] = mapped_column(Float)  # requests per second
    burst: Mapped[int | None] = mapped_column(Integer)
    daily_rows: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(256), default="")


class QuotaUsageRow(Base):
    """Rows and requests answered in a limit's scope on one UTC day: every gateway worker
    adds what it answered (an upsert adding its delta)."""

    __tablename__ = "prediction_quota_usage"
    scope: Mapped[str] = mapped_column(String(300), primary_key=True)
    day: Mapped[date] = mapped_column(primary_key=True)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)


# --- rollouts -------------------------------------------------------------------------------


class RolloutRow(Base):
    """A new version's way into an endpoint's traffic, step by step, under analysis."""

    __tablename__ = "rollouts"
    __table_args__ = (Index("ix_rollouts_endpoint_started", "endpoint", "started_at"),)
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(256))
    #: The endpoint's name while the rollout runs, NULL once it ended: unique, so an
    #: endpoint has one running rollout at most (NULLs do not collide).
    active_endpoint: Mapped[str | None] = mapped_column(String(256), unique=True)
    model: Mapped[str] = mapped_column(String(256))
    version: Mapped[int] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(1024))
    baseline: Mapped[str] = mapped_column(String(1024))
    #: The version ``baseline`` named at the start: a move of it meanwhile ends the rollout.
    baseline_model: Mapped[str] = mapped_column(String(256))
    baseline_version: Mapped[int] = mapped_column(Integer)
    plan: Mapped[dict[str, Any]]
    phase: Mapped[str] = mapped_column(String(16))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int] = mapped_column(Integer)
    weight: Mapped[float] = mapped_column(Float)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    inconclusive: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(Text, default="")
    started_at: Mapped[datetime]
    started_by: Mapped[str] = mapped_column(String(256), default="")
    acts_as: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    step_started_at: Mapped[datetime]
    #: At 100 % the baseline serves nothing: the canary is compared with the baseline's
    #: rows since this time (the previous step's start) and before ``step_started_at``.
    reference_at: Mapped[datetime | None]
    next_analysis_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    promotion_id: Mapped[str | None] = mapped_column(String(26))
    #: The endpoint's policy before the rollout, put back when it ends.
    endpoint_policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    events: Mapped[list[Any]] = mapped_column(default=list)


class RolloutAnalysisRow(Base):
    """One analysis of a rollout step: every check's verdict and figures."""

    __tablename__ = "rollout_analyses"
    __table_args__ = (Index("ix_rollout_analyses_rollout_at", "rollout_id", "at"),)
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    rollout_id: Mapped[str] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    at: Mapped[datetime]
    phase: Mapped[str] = mapped_column(String(16))
    step: Mapped[int] = mapped_column(Integer)
    weight: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str] = mapped_column(String(16))
    early: Mapped[bool] = mapped_column(Boolean, default=False)
    baseline_requests: Mapped[int] = mapped_column(Integer)
    canary_requests: Mapped[int] = mapped_column(Integer)
    checks: Mapped[list[Any]]
