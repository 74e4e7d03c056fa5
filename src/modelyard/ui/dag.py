"""A pipeline run's DAG drawn by the server as SVG: steps in layers by dependency.

The layout is the usual layered one (Sugiyama), kept small for graphs of tens of steps: a
step's layer is the longest path from a step without upstream steps; an edge that spans
layers passes through a waypoint in each layer between, so it bends around the steps there
instead of running through them; a few barycenter sweeps order each layer to cut crossings;
then each layer's positions are pulled towards their neighbours' and pushed apart where they
would overlap. Each step is a link to its section of the page, and shows its state as a word
and a symbol as well as a colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from itertools import pairwise

from markupsafe import Markup

NODE_W, NODE_H = 176, 48
WAYPOINT_W = 12
GAP_X, GAP_Y, MARGIN = 24, 40, 8
#: Longest step name shown whole in a node; longer ones end in an ellipsis (the title has it).
MAX_LABEL = 22

#: How each state reads without its colour: a symbol beside the word.
SYMBOLS = {
    "succeeded": "\u2713",  # check mark
    "failed": "\u2717",  # ballot x
    "cached": "\u21bb",  # clockwise arrow: reused
    "skipped": "\u2013",  # en dash: not run
    "running": "\u25b6",  # play
    "pending": "\u25cb",  # white circle
}


@dataclass
class _Item:
    """A step, or a waypoint of an edge that crosses its layer (``step`` empty)."""

    key: str
    layer: int
    width: float
    step: str = ""
    ups: list[_Item] = field(default_factory=list)
    downs: list[_Item] = field(default_factory=list)
    order: float = 0.0
    x: float = 0.0  # left edge

    @property
    def centre(self) -> float:
        return self.x + self.width / 2


@dataclass(frozen=True)
class DagStep:
    """What the drawing needs of a step: its name, state, upstream steps and a tooltip."""

    name: str
    status: str
    upstream: Sequence[str] = ()
    note: str = ""


class RunGraph:
    """The layout of ``steps`` (given in DAG order); :meth:`svg` draws it."""

    def __init__(self, steps: Sequence[DagStep], *, anchor: str = "step-") -> None:
        self.steps = {s.name: s for s in steps}
        self.anchor = anchor
        self.layers = _layers(self.steps)
        self.items, self.edges = self._items()
        self.rows = self._order()
        self._place()

    @property
    def width(self) -> float:
        right = max((i.x + i.width for i in self.items.values()), default=0.0)
        return right + MARGIN

    @property
    def height(self) -> float:
        return MARGIN * 2 + len(self.rows) * (NODE_H + GAP_Y) - GAP_Y if self.rows else 0.0

    def _items(self) -> tuple[dict[str, _Item], list[list[_Item]]]:
        items = {name: _Item(name, self.layers[name], NODE_W, step=name) for name in self.steps}
        edges: list[list[_Item]] = []
        for name, s in self.steps.items():
            for up in dict.fromkeys(s.upstream):
                if up not in items:
                    continue  # a step the run did not record: nothing to draw from
                chain = [items[up]]
                for layer in range(self.layers[up] + 1, self.layers[name]):
                    way = _Item(f"{up}>{name}@{layer}", layer, WAYPOINT_W)
                    items[way.key] = way
                    chain.append(way)
                chain.append(items[name])
                for a, b in pairwise(chain):
                    a.downs.append(b)
                    b.ups.append(a)
                edges.append(chain)
        return items, edges

    def _order(self) -> list[list[_Item]]:
        depth = max(self.layers.values(), default=-1) + 1
        rows: list[list[_Item]] = [[] for _ in range(depth)]
        for item in self.items.values():  # steps in DAG order, then waypoints
            rows[item.layer].append(item)
        for row in rows:
            for i, item in enumerate(row):
                item.order = i
        for _ in range(4):
            for row in rows[1:]:
                _by_barycentre(row, "ups")
            for row in reversed(rows[:-1]):
                _by_barycentre(row, "downs")
        return rows

    def _place(self) -> None:
        for row in self.rows:
            x: float = MARGIN
            for item in row:
                item.x = x
                x += item.width + GAP_X
        for _ in range(4):
            for row in self.rows[1:]:
                _pull(row, "ups")
            for row in reversed(self.rows[:-1]):
                _pull(row, "downs")
        left = min((i.x for i in self.items.values()), default=MARGIN)
        for item in self.items.values():
            item.x += MARGIN - left

    def _y(self, layer: int) -> float:
        return MARGIN + layer * (NODE_H + GAP_Y)

    def svg(self, title: str = "Pipeline steps") -> Markup:
        """The drawing: an arrow per dependency, a linked box per step."""
        width, height = round(self.width), round(self.height)
        out = [
            f'<svg class="dag" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="group" aria-label="{escape(title)}">',
            '<defs><marker id="dag-arrow" viewBox="0 0 8 8" refX="8" refY="4" '
            'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            '<path d="M0,0 L8,4 L0,8 z" class="dag-arrowhead"/></marker></defs>',
        ]
        ports = self._ports()
        for i, chain in enumerate(self.edges):
            out.append(
                f'<path class="edge" d="{self._edge_path(chain, *ports[i])}" '
                'marker-end="url(#dag-arrow)"/>'
            )
        for name, s in self.steps.items():
            item = self.items[name]
            x, y = round(item.x), round(self._y(item.layer))
            state = s.status if s.status in SYMBOLS else "pending"
            label = name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "\u2026"
            tip = f"{name}: {s.status}" + (f", {s.note}" if s.note else "")
            out.append(
                f'<a href="#{escape(self.anchor + name)}" class="node state-{state}" '
                f'aria-label="{escape(f"{name}: {s.status}")}">'
                f"<title>{escape(tip)}</title>"
                f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
                f'<text x="{x + 10}" y="{y + 19}" class="name">{escape(label)}</text>'
                f'<text x="{x + 10}" y="{y + 38}" class="state">'
                f"{SYMBOLS[state]} {escape(s.status)}</text></a>"
            )
        out.append("</svg>")
        return Markup("".join(out))

    def _ports(self) -> list[tuple[float, float]]:
        """Where each edge leaves its step and enters the next: spread along the box's
        bottom and top in the order of the other ends, so arrows neither meet nor cross."""
        leaving: dict[str, list[int]] = {}
        entering: dict[str, list[int]] = {}
        for i, chain in enumerate(self.edges):
            leaving.setdefault(chain[0].key, []).append(i)
            entering.setdefault(chain[-1].key, []).append(i)
        ports = [(0.0, 0.0)] * len(self.edges)
        starts: dict[int, float] = {}
        for key, edges in leaving.items():
            edges.sort(key=lambda i: self.edges[i][1].centre)
            for rank, i in enumerate(edges):
                starts[i] = _port(self.items[key], rank, len(edges))
        for key, edges in entering.items():
            edges.sort(key=lambda i: self.edges[i][-2].centre)
            for rank, i in enumerate(edges):
                ports[i] = (starts[i], _port(self.items[key], rank, len(edges)))
        return ports

    def _edge_path(self, chain: list[_Item], start: float, end: float) -> str:
        """A curve from ``start`` under the first step to ``end`` over the last, straight
        down through each waypoint between."""
        last = chain[-1]
        x, y = start, self._y(chain[0].layer) + NODE_H
        parts = [f"M{x:.0f},{y:.0f}"]
        for item in chain[1:]:
            top = self._y(item.layer)
            to_x = end if item is last else item.centre
            mid = (y + top) / 2
            # stop a pixel short of the box, so the arrowhead's tip touches its border
            to_y = top - 1 if item is last else top
            parts.append(f"C{x:.0f},{mid:.0f} {to_x:.0f},{mid:.0f} {to_x:.0f},{to_y:.0f}")
            x, y = to_x, top
            if item is not last:
                y = top + NODE_H
                parts.append(f"L{x:.0f},{y:.0f}")
        return " ".join(parts)


def _port(item: _Item, rank: int, count: int) -> float:
    """The ``rank``-th of ``count`` points along the middle 60 % of ``item``'s width."""
    if count == 1:
        return item.centre
    return item.x + item.width * (0.2 + 0.6 * rank / (count - 1))


def _layers(steps: dict[str, DagStep]) -> dict[str, int]:
    """Each step's layer: 0 without upstream steps, else one below its lowest upstream."""
    layers: dict[str, int] = {}
    visiting: set[str] = set()

    def layer(name: str) -> int:
        if name in layers:
            return layers[name]
        if name in visiting:  # a cycle in stored data: break it rather than recurse forever
            return 0
        visiting.add(name)
        ups = [u for u in steps[name].upstream if u in steps]
        layers[name] = 1 + max((layer(u) for u in ups), default=-1)
        visiting.discard(name)
        return layers[name]

    for name in steps:
        layer(name)
    return layers


def _by_barycentre(row: list[_Item], side: str) -> None:
    """Order ``row`` by the mean position of each item's neighbours on ``side``."""

    def key(item: _Item) -> float:
        near: list[_Item] = getattr(item, side)
        return sum(n.order for n in near) / len(near) if near else item.order

    row.sort(key=key)  # stable: items without neighbours keep their relative place
    for i, item in enumerate(row):
        item.order = i


def _pull(row: list[_Item], side: str) -> None:
    """Move each item of ``row`` towards its neighbours on ``side``, keeping the order and
    the gaps: overlapping items form a block placed where its members want on average."""
    wanted = []
    for item in row:
        near: list[_Item] = getattr(item, side)
        centre = sum(n.centre for n in near) / len(near) if near else item.centre
        wanted.append(centre - item.width / 2)
    blocks: list[tuple[int, int, float]] = []  # first index, last index, left edge
    for i in range(len(row)):
        blocks.append((i, i, wanted[i]))
        while len(blocks) > 1:
            (first, prev_last, prev_left), (_, last, left) = blocks[-2], blocks[-1]
            if left >= prev_left + _span(row, first, prev_last) + GAP_X:
                break
            offsets = _offsets(row, first, last)
            mean = sum(wanted[k] - offsets[k - first] for k in range(first, last + 1))
            blocks[-2:] = [(first, last, mean / (last - first + 1))]
    for first, last, left in blocks:
        for k, offset in enumerate(_offsets(row, first, last), start=first):
            row[k].x = left + offset


def _offsets(row: list[_Item], first: int, last: int) -> list[float]:
    offsets, x = [], 0.0
    for item in row[first : last + 1]:
        offsets.append(x)
        x += item.width + GAP_X
    return offsets


def _span(row: list[_Item], first: int, last: int) -> float:
    return sum(i.width for i in row[first : last + 1]) + GAP_X * (last - first)
