"""The gateway's routes other than predictions: health, server and model metadata, model
config and readiness, ``/metrics``. They go through Starlette, imported on first use: it is
not needed on the way to a gateway's first answer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from modelyard.errors import ModelyardError, NotFound
from modelyard.serving.protocols import oip
from modelyard.serving.wire import VERSION_DIGITS, extra_headers

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Router

    from modelyard.serving.gateway import Gateway
    from modelyard.serving.pool import LoadedModel
    from modelyard.serving.served import Served


class GatewayRoutes:
    """The handlers of a :class:`~.gateway.Gateway`'s routes other than predictions."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def router(self) -> Router:
        """Starlette's router for these routes."""
        from starlette.convertors import IntegerConvertor, register_url_convertor
        from starlette.routing import Route, Router

        class VersionConvertor(IntegerConvertor):
            # Starlette's int takes any number of digits, and int() of thousands fails
            regex = f"[0-9]{{1,{VERSION_DIGITS}}}"

        register_url_convertor("modelyard_version", VersionConvertor())
        return Router(
            routes=[
                Route("/v2", self.server_metadata, methods=["GET"]),
                Route("/v2/health/live", self.live, methods=["GET"]),
                Route("/v2/health/ready", self.ready, methods=["GET"]),
                Route("/v2/models/{name}", self.model_metadata, methods=["GET"]),
                Route(
                    "/v2/models/{name}/versions/{version:modelyard_version}",
                    self.model_metadata,
                    methods=["GET"],
                ),
                Route("/v2/models/{name}/ready", self.model_ready, methods=["GET"]),
                Route(
                    "/v2/models/{name}/versions/{version:modelyard_version}/ready",
                    self.model_ready,
                    methods=["GET"],
                ),
                Route("/v2/models/{name}/config", self.model_config, methods=["GET"]),
                Route(
                    "/v2/models/{name}/versions/{version:modelyard_version}/config",
                    self.model_config,
                    methods=["GET"],
                ),
                Route("/ping", self.live, methods=["GET"]),
                Route("/health", self.live, methods=["GET"]),
                Route("/metrics", self.metrics, methods=["GET"]),
            ]
        )

    async def live(self, _: Request) -> Response:
        return response(b'{"live":true}')

    async def ready(self, request: Request) -> Response:
        # The gateway's own readiness: every endpoint it found at start has loaded (or
        # failed to). An endpoint that failed to load is not ready on its own route (and in
        # /metrics) only: a load balancer acting on this answer must not pull the healthy
        # endpoints with it; nor does an endpoint created later make it unready while it
        # loads (every replica would turn unready at once).
        gateway = self.gateway
        state = gateway.state
        ready = state.synced
        body: dict[str, Any] = {"ready": ready}
        # An open route; with auth on, the reasons (what failed, which versions) are shown
        # to a caller whose token is not limited to predicting.
        if gateway.tokens is None or await self._sees_reasons(request):
            loading = dict.fromkeys(state.loading, "still loading its models")
            body["not_ready"] = {**loading, **state.not_ready}
        return response(orjson.dumps(body), 200 if ready else 503)

    async def _sees_reasons(self, request: Request) -> bool:
        if b"authorization" not in dict(request.scope["headers"]):
            return False
        try:
            who = await self.gateway.caller(request)
        except ModelyardError:
            return False
        return who.endpoints is None

    async def server_metadata(self, request: Request) -> Response:
        from modelyard import __version__

        try:
            await self.gateway.allow(request, None)
        except ModelyardError as exc:
            return problem_response(exc, None)
        body = {"name": "modelyard", "version": __version__, "extensions": []}
        return response(orjson.dumps(body))

    async def model_metadata(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            await self.gateway.allow(request, name)
            body = self._metadata(name, request.path_params.get("version"))
        except ModelyardError as exc:
            return problem_response(exc, name)
        return response(orjson.dumps(body))

    async def model_config(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            await self.gateway.allow(request, name)
            body = oip.model_config(self._metadata(name, request.path_params.get("version")))
        except ModelyardError as exc:
            return problem_response(exc, name)
        return response(orjson.dumps(body))

    def _metadata(self, name: str, version: int | None) -> dict[str, Any]:
        served = self.gateway.served(name)
        loaded = _pick_version(served, version)
        return oip.model_metadata(
            name,
            [str(m.version.version) for m in served.models],
            loaded.predictor.signature,
            platform=f"modelyard_{loaded.version.format}_{loaded.key[2]}",
        )

    async def model_ready(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            await self.gateway.allow(request, name)
            _pick_version(self.gateway.served(name), request.path_params.get("version"))
        except ModelyardError as exc:
            return problem_response(exc, name)
        return response(orjson.dumps({"name": name, "ready": True}))

    async def metrics(self, request: Request) -> Response:
        gateway = self.gateway
        if gateway.tokens is not None:
            try:
                caller = await gateway.caller(request)
                caller.require_unlimited("/metrics", "or scrape --metrics-address")
            except ModelyardError as exc:
                return problem_response(exc, None)
        return metrics_response(gateway)


def _pick_version(served: Served, version: int | None) -> LoadedModel:
    if version is None:
        return served.models[0]
    found = served.by_version(version)
    if found is None:
        raise NotFound(f"endpoint {served.endpoint.name!r} does not serve version {version}")
    return found


def metrics_response(gateway: Gateway) -> Response:
    """``/metrics``: the gateway's metrics in Prometheus's text format."""
    return response(gateway.metrics.render(), media_type="text/plain; version=0.0.4")


def problem_response(exc: ModelyardError, endpoint: str | None) -> Response:
    from starlette.responses import Response

    problem = exc.problem()
    if endpoint is not None:
        problem["endpoint"] = endpoint
    problem["error"] = exc.detail  # the member OIP clients (tritonclient) read
    headers = {name.decode(): value.decode() for name, value in extra_headers(exc)}
    return Response(
        orjson.dumps(problem),
        status_code=exc.status,
        media_type="application/problem+json",
        headers=headers,
    )


def response(body: bytes, status: int = 200, media_type: str = "application/json") -> Response:
    from starlette.responses import Response

    return Response(body, status_code=status, media_type=media_type)
