"""The job graph of a project as SVG: jobs as boxes coloured by status, inputs as arrows.

Layout is layered (Sugiyama-style, without crossing reduction): a job's column is the length of
the longest input chain leading to it, and jobs within a column keep their creation order. That
is linear in jobs plus edges, so a project with thousands of jobs still renders in milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

STATUS_COLOURS = {
    "Queued": "#c7c7c7",
    "Running": "#6baed6",
    "Succeeded": "#74c476",
    "Failed": "#fb6a4a",
    "Cancelled": "#fdd0a2",
}
NODE_W, NODE_H = 170, 38
GAP_X, GAP_Y = 60, 14


@dataclass(frozen=True)
class Node:
    """One job of the graph: its name (unique in the project), page link, status and inputs."""

    name: str
    href: str
    status: str
    job_type: str
    inputs: tuple[str, ...]


def layers(nodes: Sequence[Node]) -> dict[str, int]:
    """Column of each job: 0 for jobs without (known) inputs, else 1 + the deepest input's.

    Inputs naming jobs outside ``nodes`` are ignored; a cycle (impossible for jobs that read
    finished outputs, but not enforced by the service) is broken where it is found.
    """
    by_name = {n.name: n for n in nodes}
    column: dict[str, int] = {}
    visiting: set[str] = set()
    for start in nodes:
        stack = [(start.name, False)]
        while stack:
            name, expanded = stack.pop()
            if name in column:
                continue
            node = by_name[name]
            parents = [p for p in node.inputs if p in by_name and p != name]
            if expanded:
                visiting.discard(name)
                column[name] = 1 + max((column.get(p, -1) for p in parents), default=-1)
                continue
            visiting.add(name)
            stack.append((name, True))
            stack.extend((p, False) for p in parents if p not in column and p not in visiting)
    return column


def job_graph_svg(nodes: Sequence[Node]) -> str:
    """Draw the job graph.

    Parameters
    ----------
    nodes : sequence of Node
        The project's jobs, oldest first.

    Returns
    -------
    str
        ``<svg class="graph">`` with one ``a > g.job`` per job (``data-status`` set, filled by
        :data:`STATUS_COLOURS`) and one ``path.edge`` per input.
    """
    column = layers(nodes)
    rows: dict[int, int] = {}
    where: dict[str, tuple[float, float]] = {}
    for node in nodes:
        col = column[node.name]
        row = rows.get(col, 0)
        rows[col] = row + 1
        where[node.name] = (8 + col * (NODE_W + GAP_X), 8 + row * (NODE_H + GAP_Y))
    width = 16 + (max(column.values(), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = 16 + max(rows.values(), default=1) * (NODE_H + GAP_Y) - GAP_Y
    edges = []
    for node in nodes:
        x1, y1 = where[node.name]
        for parent in node.inputs:
            if parent not in where or parent == node.name:
                continue
            x0, y0 = where[parent]
            sx, sy, ex, ey = x0 + NODE_W, y0 + NODE_H / 2, x1, y1 + NODE_H / 2
            mid = (sx + ex) / 2
            edges.append(
                f'<path class="edge" d="M{sx:.0f},{sy:.0f} C{mid:.0f},{sy:.0f} {mid:.0f},{ey:.0f} '
                f'{ex:.0f},{ey:.0f}" fill="none" stroke="#777" marker-end="url(#arrow)"/>'
            )
    boxes = []
    for node in nodes:
        x, y = where[node.name]
        colour = STATUS_COLOURS.get(node.status, "#ffffff")
        boxes.append(
            f'<a href="{escape(node.href)}"><g class="job" data-status="{escape(node.status)}">'
            f"<title>{escape(node.name)}: {escape(node.status)}</title>"
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="5" '
            f'fill="{colour}" stroke="#333"/>'
            f'<text x="{x + 6:.0f}" y="{y + 15:.0f}" font-weight="bold">{escape(node.name[:24])}</text>'
            f'<text x="{x + 6:.0f}" y="{y + 30:.0f}">{escape(node.job_type[:26])}</text></g></a>'
        )
    defs = (
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>'
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" '
        f'font-size="11">{defs}{"".join(edges)}{"".join(boxes)}</svg>'
    )
