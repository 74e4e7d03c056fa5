"""The models pages: registered models, their versions and alias history, a version's card,
lineage and runtime checks, and the datasets behind them."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from html import escape
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi import Depends, Query, Request
from markupsafe import Markup
from starlette.responses import RedirectResponse, Response

from modelyard.errors import InvalidInput, ModelyardError, NotFound
from modelyard.registry.history import AliasHistory
from modelyard.registry.uri import check_version, parse_model_uri
from modelyard.ui.auth import Viewer, viewer
from modelyard.ui.routing import page_router
from modelyard.ui.templating import render

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

    from modelyard.registry.entities import ModelVersion
    from modelyard.serving.entities import Endpoint
    from modelyard.workspace import Workspace

router = page_router()

#: Rows per page of every list here.
PAGE = 50
#: Moves of each alias shown on a model's page (the CLI's alias-history has them all).
HISTORY = 10
#: What a version number in a URL may look like before the registry checks its range.
VERSION_TEXT = re.compile(r"[0-9]{1,10}")
#: The runtime checks a version can have recorded (serving/runtime.py records "onnx").
RUNTIMES = ("onnx",)
#: Runtime report entries worth a line of their own; the whole report is there too.
RUNTIME_FACTS = (
    "error",
    "model",
    "converter",
    "sample",
    "rows",
    "input_dtype",
    "max_abs_diff",
    "label_mismatches",
    "seconds",
)


def token() -> Any:
    """A page-token query parameter (a new one per parameter: FastAPI binds each to the
    first name it is used under)."""
    return Query(None, max_length=200, description="the next_page_token of the previous page")


@router.get("/models")
def models_list(
    request: Request,
    q: str = Query("", max_length=200),
    tag: str = Query("", max_length=600),
    page: str | None = token(),
    who: Viewer = Depends(viewer),
) -> Response:
    """Models by name; ``q`` matches part of a name or description, ``tag`` is key=value."""
    tags = None
    if tag.strip():
        key, sep, value = tag.strip().partition("=")
        if not sep or not key:
            raise InvalidInput(f"a tag filter is key=value, e.g. team=risk; got {tag!r}")
        tags = {key: value}
    found = who.ws.registry.list_models(q=q.strip() or None, tags=tags, limit=PAGE, page_token=page)
    params = {k: v for k, v in (("q", q), ("tag", tag)) if v}
    return render(request, who, "models/list.html", models=found, q=q, tag=tag, params=params)


@router.get("/models/{name}")
def model_page(
    request: Request, name: str, page: str | None = token(), who: Viewer = Depends(viewer)
) -> Response:
    ws = who.ws
    model = ws.registry.get_model(name)
    # one page of versions; their aliases come with the page (one query), not per version
    versions = ws.registry.list_versions(name, limit=PAGE, page_token=page)
    return render(
        request,
        who,
        "models/model.html",
        model=model,
        versions=versions,
        histories=[alias_history(ws, name, alias) for alias in sorted(model.aliases)],
    )


@router.get("/models/{name}/versions/{version}")
def version_page(
    request: Request, name: str, version: str, who: Viewer = Depends(viewer)
) -> Response:
    ws = who.ws
    v = ws.registry.get_version(
        name, version_number(f"model {name!r}", version, f"/ui/models/{quote(name)}")
    )
    graph = lineage_graph(ws, v)
    runtimes = [
        (r, runtime_report(r.report))
        for r in (ws.registry.get_runtime(name, v.version, k) for k in RUNTIMES)
        if r is not None
    ]
    return render(
        request,
        who,
        "models/version.html",
        v=v,
        card=card_html(ws.registry.get_card(name, v.version).to_markdown()),
        graph=graph,
        signature=ws.signing.signature_of(v),
        runtimes=runtimes,
        runtime_facts=RUNTIME_FACTS,
    )


@router.get("/datasets")
def datasets_list(
    request: Request,
    q: str = Query("", max_length=200),
    page: str | None = token(),
    who: Viewer = Depends(viewer),
) -> Response:
    found = who.ws.tracking.list_datasets(q=q.strip() or None, limit=PAGE, page_token=page)
    return render(request, who, "models/datasets.html", datasets=found, q=q)


@router.get("/datasets/{name}")
def dataset_latest(name: str, who: Viewer = Depends(viewer)) -> Response:
    """A dataset's latest version."""
    ds = who.ws.tracking.get_dataset(name)
    return RedirectResponse(f"/ui/datasets/{quote(ds.name)}/{ds.version}", status_code=302)


@router.get("/datasets/{name}/{version}")
def dataset_page(
    request: Request,
    name: str,
    version: str,
    runs_page: str | None = token(),
    versions_page: str | None = token(),
    who: Viewer = Depends(viewer),
) -> Response:
    ws = who.ws
    ds = ws.tracking.get_dataset(name, version_number(f"dataset {name!r}", version, "/ui/datasets"))
    return render(
        request,
        who,
        "models/dataset.html",
        ds=ds,
        runs=ws.tracking.dataset_runs(ds.id, limit=PAGE, page_token=runs_page),
        model_versions=ws.registry.search_versions(
            dataset_id=ds.id, limit=PAGE, page_token=versions_page
        ),
        siblings=ws.tracking.list_datasets(name=name, limit=20).items,
    )


def version_number(owner: str, text: str, listing: str) -> int:
    """The version number ``text`` names in a URL: a 404 that says what one looks like
    when it is not a number, a 422 when it is out of range."""
    if not VERSION_TEXT.fullmatch(text):
        raise NotFound(
            f"{owner} has no version {text!r}: a version is a whole number such as 1; "
            f"{listing} lists them"
        )
    return check_version(int(text))


def runtime_report(report: dict[str, Any]) -> str:
    """A runtime check's report as indented JSON, less the server's local path of the
    model it converted."""
    return json.dumps({k: v for k, v in report.items() if k != "path"}, indent=2, default=str)


def alias_history(ws: Workspace, name: str, alias: str) -> AliasHistory:
    """The last :data:`HISTORY` moves of ``name@alias`` (none if the audit log has none)."""
    try:
        return ws.registry.alias_history(name, alias, limit=HISTORY)
    except NotFound:
        return AliasHistory(model=name, alias=alias, moves=[])


# --- the model card -----------------------------------------------------------------------


@functools.cache
def _markdown() -> MarkdownIt:
    # markdown-it-py comes with rich; "html": False escapes any HTML written into a card
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")


def card_html(markdown: str) -> Markup:
    """A model card's Markdown as HTML. HTML typed into a card is shown as text, unsafe
    link schemes (``javascript:``) are dropped, and headings start at ``<h3>``: the page
    has its own ``<h1>`` and ``<h2>``."""
    md = _markdown()
    tokens = md.parse(markdown)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1:]) + 2, 6)}"
    return Markup(md.renderer.render(tokens, md.options, {}))


# --- lineage ------------------------------------------------------------------------------


@dataclass
class Node:
    """A box of the lineage graph: what it is, its link, and a line about it."""

    kind: str
    label: str
    href: str | None
    note: str = ""


@dataclass
class LineageGraph:
    """Where a version came from (its run and datasets) and what serves it (endpoints)."""

    version: Node
    run: Node | None = None
    run_missing: str | None = None
    datasets: list[Node] = field(default_factory=list)
    endpoints: list[Node] = field(default_factory=list)

    #: Box size and the space between columns, in SVG units.
    W, H, GAP, ROW = 220, 44, 90, 58

    def svg(self) -> Markup:
        """The graph drawn in three columns: run and datasets, the version, its endpoints.

        Hidden from screen readers: the list beside it says the same with the same links.
        """
        inputs = ([self.run] if self.run else []) + self.datasets
        columns = [inputs, [self.version], self.endpoints]
        rows = max(len(c) for c in columns)
        width = 3 * self.W + 2 * self.GAP + 2
        height = rows * self.ROW + 2
        boxes: dict[int, tuple[float, float]] = {}
        out = [
            f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            'aria-hidden="true" focusable="false">'
            '<defs><marker id="lineage-arrow" viewBox="0 0 8 8" refX="8" refY="4" '
            'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            '<path d="M0,0 L8,4 L0,8 z" class="arrow"/></marker></defs>'
        ]
        for col, nodes in enumerate(columns):
            x = 1.0 + col * (self.W + self.GAP)
            top = (height - len(nodes) * self.ROW) / 2
            for i, node in enumerate(nodes):
                y = top + i * self.ROW + (self.ROW - self.H) / 2
                boxes[id(node)] = (x, y)
                out.append(self._box(node, x, y))
        vx, vy = boxes[id(self.version)]
        for node in inputs:
            x, y = boxes[id(node)]
            out.append(self._edge(x + self.W, y + self.H / 2, vx, vy + self.H / 2))
        for node in self.endpoints:
            x, y = boxes[id(node)]
            out.append(self._edge(vx + self.W, vy + self.H / 2, x, y + self.H / 2))
        out.append("</svg>")
        return Markup("".join(out))

    def _box(self, node: Node, x: float, y: float) -> str:
        here = " here" if node is self.version else ""
        body = (
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{self.W}" height="{self.H}" rx="5"/>'
            f'<text x="{x + 8:.0f}" y="{y + 18:.0f}" class="label">{_clip(node.label, 30)}</text>'
            f'<text x="{x + 8:.0f}" y="{y + 35:.0f}" class="note">'
            f"{_clip(f'{node.kind} · {node.note}' if node.note else node.kind, 36)}</text>"
        )
        note = f" ({node.note})" if node.note else ""
        title = f"<title>{escape(node.kind)}: {escape(node.label + note)}</title>"
        if node.href is None:
            return f'<g class="node {node.kind}{here}">{title}{body}</g>'
        return (
            f'<a href="{escape(node.href)}" tabindex="-1">'
            f'<g class="node {node.kind}{here}">{title}{body}</g></a>'
        )

    @staticmethod
    def _edge(x1: float, y1: float, x2: float, y2: float) -> str:
        mid = (x1 + x2) / 2
        return (
            f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} '
            f'{mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}" marker-end="url(#lineage-arrow)"/>'
        )


def _clip(text: str, size: int) -> str:
    return escape(text if len(text) <= size else text[: size - 1] + "\u2026")


def lineage_graph(ws: Workspace, v: ModelVersion) -> LineageGraph:
    """The version's run, datasets and serving endpoints, each a link to its page; a run
    or dataset deleted since the version was registered is shown as missing, not an error."""
    graph = LineageGraph(
        version=Node(
            "version", f"{v.model} v{v.version}", None, " ".join(f"@{a}" for a in v.aliases)
        )
    )
    if v.run_id:
        href = f"/ui/runs/{quote(v.run_id)}"
        try:
            run = ws.tracking.get_run(v.run_id)
            graph.run = Node("run", run.name or run.id, href, f"experiment {run.experiment}")
        except NotFound:
            graph.run_missing = v.run_id
    for link in v.datasets:
        try:
            ds = ws.tracking.get_dataset_by_id(link.dataset_id)
        except NotFound:
            graph.datasets.append(Node("dataset", link.dataset_id, None, f"{link.role}, deleted"))
            continue
        href = f"/ui/datasets/{quote(ds.name)}/{ds.version}"
        note = f"{link.role}, {ds.num_rows:,} rows"
        graph.datasets.append(Node("dataset", f"{ds.name} v{ds.version}", href, note))
    for endpoint, ways in serving_endpoints(ws, v):
        href = f"/ui/endpoints/{quote(endpoint.name)}"
        graph.endpoints.append(Node("endpoint", endpoint.name, href, ", ".join(ways)))
    return graph


def serving_endpoints(ws: Workspace, v: ModelVersion) -> list[tuple[Endpoint, list[str]]]:
    """The endpoints that send requests (or a shadow copy) to ``v``, each with how: its
    target, a weighted route, a variant, or its shadow. A target that does not resolve
    (an alias deleted since) serves nothing."""
    resolved: dict[str, int | None] = {}

    def version_of(target: str) -> int | None:
        if target not in resolved:
            try:
                ref = parse_model_uri(target)
                resolved[target] = ws.registry.resolve(ref).version if ref.name == v.model else None
            except ModelyardError:
                resolved[target] = None
        return resolved[target]

    found = []
    for endpoint in ws.endpoints.list():
        ways = [
            how for how, target in endpoint_targets(endpoint) if version_of(target) == v.version
        ]
        if ways:
            found.append((endpoint, ways))
    return found


def endpoint_targets(endpoint: Endpoint) -> list[tuple[str, str]]:
    """``(how, target)`` for every model URI an endpoint sends requests to."""
    how = {
        "target": "{target}",
        "route": "{target} at {share:.0f} %",
        "variant": "{target} as variant {name}",
        "shadow": "{target} as shadow",
    }
    return [(how[d.role].format(**d._asdict()), d.target) for d in endpoint.destinations()]
