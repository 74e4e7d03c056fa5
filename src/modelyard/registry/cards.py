"""Model cards, lineage, and the recorded checks of optimised runtimes, per version.

A card is generated at registration from the manifest, the run and the datasets behind
the version, and its sections can be edited afterwards; lineage is read live from
tracking. Runtime records say how an optimised runtime compared with the version's
native predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from modelyard.errors import InvalidInput
from modelyard.governance.entities import Permission
from modelyard.registry.entities import (
    DatasetLink,
    Lineage,
    ModelCard,
    VersionRuntime,
    check_card_sections,
)
from modelyard.registry.rows import RegistryRows
from modelyard.store.tables import (
    VersionRuntimeRow,
)

if TYPE_CHECKING:
    from modelyard.registry.entities import ModelVersion


class RegistryCards(RegistryRows):
    """The card, lineage and runtime-record operations of
    :class:`~modelyard.registry.service.RegistryService`."""

    if TYPE_CHECKING:  # defined by RegistryService; declared here for the type checker

        def get_version(self, name: str, version: int) -> ModelVersion: ...

    # --- runtime records ----------------------------------------------------------------

    def record_runtime(
        self,
        name: str,
        version: int,
        runtime: str,
        *,
        status: str,
        artifact_digest: str | None,
        report: Mapping[str, Any],
    ) -> VersionRuntime:
        """Record how an optimised runtime compared with the version's native predictions."""
        self.ws.access.require(Permission.write, model=name, action="record runtime checks")
        if artifact_digest is not None and not self.ws.artifacts.exists(artifact_digest):
            raise InvalidInput(f"no artifact {artifact_digest}; upload the runtime's file first")
        now = datetime.now(UTC)
        with self.store.write(self.ws.actor) as tx:
            row = self._version_row(tx.session, self._model_row(tx.session, name), version)
            existing = tx.session.get(VersionRuntimeRow, (row.id, runtime))
            if existing is not None:
                tx.session.delete(existing)
                tx.session.flush()
            tx.session.add(
                VersionRuntimeRow(
                    version_id=row.id,
                    runtime=runtime,
                    status=status,
                    artifact_digest=artifact_digest,
                    report=dict(report),
                    created_at=now,
                )
            )
            tx.record(
                "version.runtime",
                "model_version",
                f"{name}/{version}",
                None if existing is None else {"runtime": runtime, "status": existing.status},
                {"runtime": runtime, "status": status},
            )
        return VersionRuntime(
            model=name,
            version=version,
            runtime=runtime,
            status=status,
            artifact_digest=artifact_digest,
            report=dict(report),
            created_at=now,
        )

    def get_runtime(self, name: str, version: int, runtime: str) -> VersionRuntime | None:
        """The recorded check of ``runtime`` for a version, if one was made."""
        with self.store.read() as s:
            row = self._version_row(s, self._model_row(s, name), version)
            found = s.get(VersionRuntimeRow, (row.id, runtime))
            if found is None:
                return None
            return VersionRuntime(
                model=name,
                version=version,
                runtime=runtime,
                status=found.status,
                artifact_digest=found.artifact_digest,
                report=found.report,
                created_at=found.created_at,
            )

    # --- cards and lineage ------------------------------------------------------------

    def get_card(self, name: str, version: int) -> ModelCard:
        with self.store.read() as s:
            row = self._version_row(s, self._model_row(s, name), version)
            return ModelCard.model_validate({**row.card, "model": name, "version": version})

    def update_card(self, name: str, version: int, sections: Mapping[str, Any]) -> ModelCard:
        """Replace the given sections of a version's card; others keep their text."""
        self.ws.access.require(Permission.write, model=name, action="change model cards")
        check_card_sections(sections)
        with self.store.write(self.ws.actor) as tx:
            row = self._version_row(tx.session, self._model_row(tx.session, name), version)
            try:
                card = ModelCard.model_validate(
                    {**row.card, **sections, "model": name, "version": version}
                )
            except ValidationError as exc:
                err = exc.errors()[0]
                raise InvalidInput(f"card section {err['loc'][0]!r}: {err['msg']}") from None
            before = {k: row.card.get(k) for k in sections}
            row.card = card.model_dump(mode="json")
            row.updated_at = datetime.now(UTC)
            tx.record("card.update", "model_version", f"{name}/{version}", before, dict(sections))
        return card

    def lineage(self, name: str, version: int) -> Lineage:
        """The run, experiment, datasets, params and code version behind a version."""
        v = self.get_version(name, version)
        lineage = Lineage(model=name, version=version, run_id=v.run_id, source=v.source)
        if v.run_id:
            run = self.ws.tracking.get_run(v.run_id)
            lineage.experiment = run.experiment
            lineage.params = dict(run.params)
            lineage.code_version = run.tags.get("git.commit") or run.tags.get("code_version")
        for link in v.datasets:
            ds = self.ws.tracking.get_dataset_by_id(link.dataset_id)
            lineage.datasets.append(
                {
                    "dataset_id": ds.id,
                    "name": ds.name,
                    "version": ds.version,
                    "digest": ds.digest,
                    "role": link.role,
                }
            )
        return lineage

    def _generated_card(
        self,
        name: str,
        manifest: dict[str, Any],
        description: str,
        run_id: str | None,
        links: list[DatasetLink],
    ) -> dict[str, Any]:
        signature = manifest.get("signature", {})
        outputs = ", ".join(o["name"] for o in signature.get("outputs", [])) or "its outputs"
        inputs = signature.get("inputs", [])
        summary = description or (
            f"A {manifest['framework']} model ({manifest['format']} format) that predicts "
            f"{outputs} from {len(inputs)} input{'s' if len(inputs) != 1 else ''}."
        )
        card = ModelCard(model=name, version=0, summary=summary, signature=signature)
        if run_id:
            run = self.ws.tracking.get_run(run_id)  # NotFound for an unknown run
            card.metrics = dict(run.metrics)
            card.lineage = {"run_id": run_id, "experiment": run.experiment}
            code = run.tags.get("git.commit") or run.tags.get("code_version")
            if code:
                card.lineage["code_version"] = code
        for link in links:
            ds = self.ws.tracking.get_dataset_by_id(link.dataset_id)  # NotFound if unknown
            card.data.append(
                {
                    "dataset_id": ds.id,
                    "name": ds.name,
                    "version": ds.version,
                    "num_rows": ds.num_rows,
                    "digest": ds.digest,
                    "role": link.role,
                }
            )
        return card.model_dump(mode="json")
