"""Rollouts over HTTP, and the interface both transports of ``client.rollouts`` share."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, TypeAdapter

from modelyard.client.http_transport import HttpTransport, _q
from modelyard.rollouts import Rollout, RolloutPlan

if TYPE_CHECKING:  # the service imports the analysis (pyarrow, scipy): not for a client
    from modelyard.rollouts.service import RolloutPass


class Rollouts(Protocol):
    """What ``client.rollouts`` does, in-process (:class:`~modelyard.rollouts.service.
    RolloutService`) or over HTTP (:class:`HttpRollouts`)."""

    def start(
        self, endpoint: str, to: str, plan: RolloutPlan | Mapping[str, Any] | None = None
    ) -> Rollout: ...

    def get(self, ref: str) -> Rollout: ...

    def list(
        self, endpoint: str | None = None, *, active: bool | None = None, limit: int = 100
    ) -> builtins.list[Rollout]: ...

    def active(self) -> builtins.list[Rollout]: ...

    def pause(self, ref: str, reason: str = "") -> Rollout: ...

    def resume(self, ref: str) -> Rollout: ...

    def abort(self, ref: str, reason: str = "") -> Rollout: ...

    def promote(self, ref: str) -> Rollout: ...

    def run_once(self) -> RolloutPass: ...


_ROLLOUTS = TypeAdapter(list[Rollout])


class HttpRollouts:
    """:class:`~modelyard.rollouts.service.RolloutService` over HTTP."""

    def __init__(self, t: HttpTransport) -> None:
        self.t = t

    def start(
        self, endpoint: str, to: str, plan: RolloutPlan | Mapping[str, Any] | None = None
    ) -> Rollout:
        body: dict[str, Any] = {"endpoint": endpoint, "to": to}
        if plan is not None:
            body["plan"] = plan.model_dump(mode="json") if isinstance(plan, BaseModel) else plan
        result: Rollout = self.t.send("POST", "/rollouts", Rollout, body)
        return result

    def get(self, ref: str) -> Rollout:
        return self.t.get(f"/rollouts/{_q(ref)}", Rollout)

    def list(
        self, endpoint: str | None = None, *, active: bool | None = None, limit: int = 100
    ) -> builtins.list[Rollout]:
        params: dict[str, Any] = {"limit": limit}
        if endpoint is not None:
            params["endpoint"] = endpoint
        if active is not None:
            params["active"] = "true" if active else "false"
        return _ROLLOUTS.validate_json(self.t.request("GET", "/rollouts", params=params).content)

    def active(self) -> builtins.list[Rollout]:
        return self.list(active=True, limit=1000)

    def pause(self, ref: str, reason: str = "") -> Rollout:
        return self._act(ref, "pause", {"reason": reason})

    def resume(self, ref: str) -> Rollout:
        return self._act(ref, "resume")

    def abort(self, ref: str, reason: str = "") -> Rollout:
        return self._act(ref, "abort", {"reason": reason})

    def promote(self, ref: str) -> Rollout:
        return self._act(ref, "promote")

    def run_once(self) -> RolloutPass:
        """One controller pass on the server."""
        from modelyard.rollouts.service import RolloutPass

        response = self.t.request("POST", "/rollout-passes")
        return TypeAdapter(RolloutPass).validate_json(response.content)

    def _act(self, ref: str, action: str, body: dict[str, Any] | None = None) -> Rollout:
        result: Rollout = self.t.send("POST", f"/rollouts/{_q(ref)}/{action}", Rollout, body)
        return result
