"""The console's SVG plots and job graph, checked against the data they draw (in px and Å)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from cryokube.operator.console import plots
from cryokube.operator.console.graph import Node, job_graph_svg, layers

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def _all(root: ET.Element, tag: str, css: str | None = None) -> list[ET.Element]:
    found = root.iter(f"{SVG}{tag}")
    return [e for e in found if css is None or css in (e.get("class") or "").split()]


def _points(line: ET.Element) -> np.ndarray:
    return np.array([[float(v) for v in p.split(",")] for p in line.get("points", "").split()])


@pytest.mark.parametrize("resolution_A", [3.3, 7.9, 12.0])
def test_fsc_resolution_is_where_the_curve_crosses_0143(resolution_A: float) -> None:
    freq = np.linspace(0.0, 0.5, 101)[1:]
    # Linear in frequency through 0.143 at 1/resolution: interpolation is exact.
    fsc = 1.0 - (1.0 - 0.143) * freq * resolution_A
    assert plots.fsc_resolution_A(freq, fsc) == pytest.approx(resolution_A, abs=1e-6)


def test_fsc_that_never_crosses_has_no_resolution() -> None:
    freq = np.linspace(0.01, 0.25, 30)
    assert plots.fsc_resolution_A(freq, np.full(30, 0.9)) is None
    root = _parse(plots.fsc_svg(freq, {"masked": np.full(30, 0.9)}))
    assert not _all(root, "text", "resolution")
    assert "not reached" in "".join(root.itertext())


def test_fsc_svg_draws_curves_threshold_and_resolution() -> None:
    freq = np.linspace(0.0, 0.25, 51)[1:]
    fsc = 1.0 - (1.0 - 0.143) * freq * 6.0
    root = _parse(plots.fsc_svg(freq, {"unmasked": fsc, "masked": np.clip(fsc + 0.1, -1, 1)}))
    assert len(_all(root, "polyline", "curve")) == 2
    assert len(_all(root, "line", "threshold")) == 1
    (label,) = _all(root, "text", "resolution")
    assert label.text == "6.00 Å"


def test_trajectory_points_keep_the_shape_of_the_drift() -> None:
    frames = np.arange(20, dtype=np.float64)
    drift = np.stack([2.0 * frames, -1.0 * frames], axis=1)
    root = _parse(plots.motion_trajectories_svg([drift], labels=["mic_1"]))
    (curve,) = _all(root, "polyline", "curve")
    pts = _points(curve)
    assert pts.shape == (20, 2)
    # Equal aspect: the drawn path keeps the drift's direction (y grows downward on screen).
    step = pts[-1] - pts[0]
    assert step[1] / step[0] == pytest.approx(0.5, abs=0.01)


def test_picks_are_circles_at_the_centres_with_the_box_diameter() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(size=(300, 400)).astype(np.float32)
    centres = np.array([[10.0, 20.0], [200.5, 150.25], [399.0, 299.0]])
    root = _parse(plots.micrograph_picks_svg(image, centres, box_px=40.0, size_px=200))
    circles = _all(root, "circle", "pick")
    scale = 200 / 400
    drawn = np.array([[float(c.get("cx", "")), float(c.get("cy", ""))] for c in circles])
    np.testing.assert_allclose(drawn / scale, centres, atol=0.1 / scale)
    radii_px = np.array([float(c.get("r", "")) for c in circles]) / scale
    np.testing.assert_allclose(radii_px, 20.0, atol=0.1 / scale)
    (img,) = _all(root, "image")
    assert img.get("href", "").startswith("data:image/png;base64,")


def test_ctf_fit_marks_the_fit_resolution() -> None:
    freq = np.linspace(0.02, 0.25, 100)
    model = np.sin(400 * freq**2) ** 2
    root = _parse(plots.ctf_fit_svg(freq, model + 0.01, model, fit_resolution_A=5.0))
    assert len(_all(root, "polyline", "curve")) == 2
    (line,) = _all(root, "line", "fit-resolution")
    frame = _all(root, "rect", "frame")[0]
    left, width = float(frame.get("x", "")), float(frame.get("width", ""))
    x_at = left + (0.2 - 0.02) / (0.25 - 0.02) * width
    assert float(line.get("x1", "")) == pytest.approx(x_at, abs=0.1)
    assert "CTF fit to 5.00 Å" in "".join(root.itertext())


def test_defocus_histogram_counts_every_exposure() -> None:
    defocus_A = np.random.default_rng(1).normal(15000, 2000, 257)
    root = _parse(plots.defocus_histogram_svg(defocus_A, bins=12))
    bars = _all(root, "rect", "bar")
    assert sum(int(b.findtext(f"{SVG}title") or 0) for b in bars) == 257


def test_class_gallery_orders_by_size_and_captions_counts() -> None:
    averages = np.zeros((3, 16, 16), np.float32)
    root = _parse(plots.class_gallery_svg(averages, [5, 50, 20]))
    groups = _all(root, "g", "class-average")
    assert [g.get("data-class") for g in groups] == ["1", "2", "0"]
    assert [g.findtext(f"{SVG}text") for g in groups] == ["#1: 50", "#2: 20", "#0: 5"]


def test_volume_views_are_three_slices_and_a_projection() -> None:
    volume = np.zeros((8, 10, 12), np.float32)
    volume[4, 5, 6] = 1.0
    root = _parse(plots.volume_views_svg(volume, pixel_size_A=1.5))
    views = [g.get("data-view") for g in _all(root, "g", "view")]
    assert views == ["slice XY", "slice XZ", "slice YZ", "projection Z"]
    assert "12 px box, 1.5 Å/px (18 Å)" in "".join(root.itertext())


def test_text_is_escaped() -> None:
    svg = plots.motion_trajectories_svg([np.zeros((2, 2))], labels=["<script>x</script>"])
    assert "<script>" not in svg
    _parse(svg)


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: plots.motion_trajectories_svg([np.zeros((3, 3))]), "trajectories_px"),
        (lambda: plots.micrograph_picks_svg(np.zeros((4, 4)), [], box_px=0), "box_px"),
        (lambda: plots.ctf_fit_svg([1, 2], [1, 2], [1]), "model"),
        (lambda: plots.class_gallery_svg(np.zeros((2, 4, 4)), [1]), "sizes"),
        (lambda: plots.volume_views_svg(np.zeros((4, 4)), pixel_size_A=1), "volume"),
        (lambda: plots.fsc_svg([0.1], {}), "curves"),
        (lambda: plots.defocus_histogram_svg([np.nan]), "values"),
    ],
)
def test_bad_input_names_the_argument(call: object, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        call()  # type: ignore[operator]


def _node(name: str, *inputs: str, status: str = "Succeeded") -> Node:
    return Node(name, f"/console/jobs/{name}", status, "t", inputs)


def test_graph_layers_follow_the_longest_input_chain() -> None:
    nodes = [_node("a"), _node("b", "a"), _node("c", "a"), _node("d", "b", "c", "a"), _node("e")]
    assert layers(nodes) == {"a": 0, "b": 1, "c": 1, "d": 2, "e": 0}


def test_graph_survives_cycles_and_unknown_inputs() -> None:
    nodes = [_node("a", "b"), _node("b", "a"), _node("c", "gone", "c")]
    column = layers(nodes)
    assert set(column) == {"a", "b", "c"}
    assert column["c"] == 0


def test_graph_svg_has_a_box_per_job_and_an_arrow_per_edge() -> None:
    nodes = [_node("a"), _node("b", "a", status="Running"), _node("c", "a", "b", status="Failed")]
    root = _parse(job_graph_svg(nodes))
    jobs = _all(root, "g", "job")
    assert [j.get("data-status") for j in jobs] == ["Succeeded", "Running", "Failed"]
    assert len(_all(root, "path", "edge")) == 3
    fills = {j.get("data-status"): j.find(f"{SVG}rect").get("fill") for j in jobs}  # type: ignore[union-attr]
    assert fills["Failed"] != fills["Running"] != fills["Succeeded"]
