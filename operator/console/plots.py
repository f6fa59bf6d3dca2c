"""Server-side plots as SVG strings: the figures a person looks at instead of reading numbers.

Every function takes plain arrays (host numpy, from the job outputs on storage) and returns a
self-contained ``<svg>`` element: axes and curves as vector paths, images as embedded PNG. Text
is escaped, so a file or class name cannot inject markup. Figures carry ``class`` names
(``curve``, ``pick``, ``class-average``, ...) that the console's tests look for.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import imagecodecs
import numpy as np
import numpy.typing as npt

WIDTH_PX = 480
HEIGHT_PX = 300
_MARGIN = (48, 16, 16, 40)  # left, right, top, bottom (px)
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
FSC_THRESHOLD = 0.143
"""The gold-standard FSC threshold (Rosenthal & Henderson 2003, doi:10.1016/j.jmb.2003.07.013)."""


@dataclass(frozen=True)
class Series:
    """One curve of a line plot: ``x`` and ``y`` of equal length, a legend label and a class."""

    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    label: str
    css: str = "curve"


def _as_1d(name: str, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {array.shape}")
    return array


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    span = hi - lo
    if not math.isfinite(span) or span <= 0:
        return [lo]
    raw = span / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


class _Axes:
    """Maps data coordinates to SVG pixels and draws a frame with ticks and labels."""

    def __init__(
        self, x_range: tuple[float, float], y_range: tuple[float, float], title: str
    ) -> None:
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1.0
        self.title = title
        left, right, top, bottom = _MARGIN
        self.left, self.right = left, WIDTH_PX - right
        self.top, self.bottom = top + 14, HEIGHT_PX - bottom

    def px(self, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> tuple[Any, Any]:
        sx = self.left + (x - self.x0) / (self.x1 - self.x0) * (self.right - self.left)
        sy = self.bottom - (y - self.y0) / (self.y1 - self.y0) * (self.bottom - self.top)
        return sx, sy

    def frame(self, x_label: str, y_label: str) -> list[str]:
        parts = [
            (
                f'<text x="{WIDTH_PX / 2}" y="14" text-anchor="middle" class="title">'
                f"{escape(self.title)}</text>"
            ),
            (
                f'<rect class="frame" x="{self.left}" y="{self.top}" width="{self.right - self.left}"'
                f' height="{self.bottom - self.top}" fill="none" stroke="#444"/>'
            ),
        ]
        for tx in _ticks(self.x0, self.x1):
            sx, _ = self.px(np.array(tx), np.array(self.y0))
            parts.append(
                f'<text class="tick" x="{sx:.1f}" y="{self.bottom + 13}" text-anchor="middle">'
                f"{_fmt(tx)}</text>"
            )
        for ty in _ticks(self.y0, self.y1):
            _, sy = self.px(np.array(self.x0), np.array(ty))
            parts.append(
                f'<text class="tick" x="{self.left - 4}" y="{sy + 4:.1f}" text-anchor="end">'
                f"{_fmt(ty)}</text>"
            )
        parts.append(
            f'<text class="label" x="{(self.left + self.right) / 2}" y="{HEIGHT_PX - 4}" '
            f'text-anchor="middle">{escape(x_label)}</text>'
        )
        parts.append(
            f'<text class="label" transform="translate(12 {(self.top + self.bottom) / 2}) '
            f'rotate(-90)" text-anchor="middle">{escape(y_label)}</text>'
        )
        return parts

    def polyline(self, series: Series, colour: str) -> str:
        sx, sy = self.px(series.x, series.y)
        keep = np.isfinite(sx) & np.isfinite(sy)
        points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(sx[keep], sy[keep], strict=True))
        return (
            f'<polyline class="{escape(series.css)}" fill="none" stroke="{colour}" '
            f'stroke-width="1.5" points="{points}"><title>{escape(series.label)}</title>'
            "</polyline>"
        )


def _svg(parts: Sequence[str], *, css: str, width: int = WIDTH_PX, height: int = HEIGHT_PX) -> str:
    body = "".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot {css}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
        f'font-size="11">{body}</svg>'
    )


def _legend(series: Sequence[Series], axes: _Axes) -> list[str]:
    parts = []
    for i, s in enumerate(series):
        y = axes.top + 12 + 13 * i
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<text class="legend" x="{axes.right - 6}" y="{y}" text-anchor="end" '
            f'fill="{colour}">{escape(s.label)}</text>'
        )
    return parts


def line_plot(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    css: str,
    y_range: tuple[float, float] | None = None,
    extra: Sequence[str] = (),
    equal_aspect: bool = False,
) -> str:
    """Curves on shared axes, with a legend.

    Parameters
    ----------
    series : sequence of Series
        The curves; each ``x`` and ``y`` must have the same length.
    title, x_label, y_label : str
        Texts (axis labels should name units).
    css : str
        Class of the ``<svg>`` element (``"fsc"``, ``"ctf-fit"``).
    y_range : (float, float), optional
        Fixed y limits; default: the data's.
    extra : sequence of str
        Markup drawn over the curves (markers, threshold lines), in SVG pixel coordinates.
    equal_aspect : bool, optional
        Use the same data-per-pixel scale on both axes (trajectories).

    Returns
    -------
    str
        The ``<svg>`` element.
    """
    if not series:
        raise ValueError("series: at least one curve is needed")
    for s in series:
        if s.x.shape != s.y.shape:
            raise ValueError(f"series {s.label!r}: x has shape {s.x.shape}, y {s.y.shape}")
    xs = np.concatenate([s.x for s in series])
    ys = np.concatenate([s.y for s in series])
    x_lo, x_hi = float(np.nanmin(xs)), float(np.nanmax(xs))
    y_lo, y_hi = y_range or (float(np.nanmin(ys)), float(np.nanmax(ys)))
    if equal_aspect:
        half = 0.55 * max(x_hi - x_lo, y_hi - y_lo, 1e-6)
        cx, cy = (x_lo + x_hi) / 2, (y_lo + y_hi) / 2
        aspect = (WIDTH_PX - 64) / (HEIGHT_PX - 70)
        x_lo, x_hi = cx - half * aspect, cx + half * aspect
        y_lo, y_hi = cy - half, cy + half
    axes = _Axes((x_lo, x_hi), (y_lo, y_hi), title)
    parts = axes.frame(x_label, y_label)
    parts += [axes.polyline(s, PALETTE[i % len(PALETTE)]) for i, s in enumerate(series)]
    parts += list(extra)
    parts += _legend(series, axes)
    return _svg(parts, css=css)


def motion_trajectories_svg(
    trajectories_px: Sequence[npt.ArrayLike], *, labels: Sequence[str] | None = None
) -> str:
    """Whole-frame drift paths of one or more movies, with the first frame marked.

    Parameters
    ----------
    trajectories_px : sequence of array of shape (n_frames, 2)
        Per-frame shifts ``(x, y)`` in px (the motion job's ``*_traj_px.npy``).
    labels : sequence of str, optional
        One label per trajectory (exposure names); default ``movie 1``, ``movie 2``, ...

    Returns
    -------
    str
        ``<svg class="plot motion">`` with one ``polyline.curve`` per movie.
    """
    if len(trajectories_px) == 0:
        raise ValueError("trajectories_px: at least one trajectory is needed")
    names = (
        list(labels)
        if labels is not None
        else [f"movie {i + 1}" for i in range(len(trajectories_px))]
    )
    if len(names) != len(trajectories_px):
        raise ValueError(f"labels: {len(names)} labels for {len(trajectories_px)} trajectories")
    series = []
    for name, traj in zip(names, trajectories_px, strict=True):
        array = np.asarray(traj, dtype=np.float64)
        if array.ndim != 2 or array.shape[1] != 2 or array.shape[0] == 0:
            raise ValueError(
                f"trajectories_px[{name!r}]: expected shape (n_frames, 2), got {array.shape}"
            )
        series.append(Series(array[:, 0], array[:, 1], name))
    svg = line_plot(
        series, title="Motion trajectories", x_label="x shift (px)", y_label="y shift (px)",
        css="motion", equal_aspect=True,
    )  # fmt: skip
    return svg


def _png_data_uri(image: npt.ArrayLike, *, robust_percent: float = 1.0) -> str:
    """An 8-bit grey PNG of ``image`` (contrast stretched between percentiles) as a data URI."""
    array = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(array, [robust_percent, 100 - robust_percent])
    scaled = np.clip((array - lo) / max(float(hi - lo), 1e-12), 0.0, 1.0)
    png = imagecodecs.png_encode((scaled * 255 + 0.5).astype(np.uint8))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _bin_image(image: npt.NDArray[np.float32], factor: int) -> npt.NDArray[np.float32]:
    """Mean over ``factor`` x ``factor`` blocks (edges that do not fill a block are dropped)."""
    if factor <= 1:
        return image
    ny, nx = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor)
    # Sum the contiguous axis first (one streaming pass), then the rows of each block.
    binned: npt.NDArray[np.float32] = blocks.sum(axis=3, dtype=np.float32).sum(axis=1)
    return binned / np.float32(factor * factor)


def micrograph_picks_svg(
    micrograph: npt.ArrayLike,
    picks_xy_px: npt.ArrayLike,
    *,
    box_px: float,
    size_px: int = 360,
    title: str = "",
) -> str:
    """A micrograph thumbnail with particle picks drawn as circles.

    Parameters
    ----------
    micrograph : array of shape (ny, nx)
        The micrograph, any real dtype.
    picks_xy_px : array of shape (n_picks, 2)
        Particle centres ``(x, y)`` in micrograph px (origin at the top-left pixel's corner).
    box_px : float
        Particle box size in micrograph px; circles have this diameter.
    size_px : int, optional
        Width of the thumbnail on screen (px); the image is binned to about this size.
    title : str, optional
        Caption (the micrograph's name).

    Returns
    -------
    str
        ``<svg class="plot picks">`` with one ``<image>`` and one ``circle.pick`` per pick.
    """
    image = np.asarray(micrograph, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"micrograph: expected shape (ny, nx), got {image.shape}")
    picks = np.asarray(picks_xy_px, dtype=np.float64).reshape(-1, 2)
    if box_px <= 0:
        raise ValueError(f"box_px: must be positive, got {box_px}")
    ny, nx = image.shape
    factor = max(1, nx // size_px)
    scale = size_px / nx
    height = round(ny * scale)
    parts = [
        (
            f'<image class="micrograph" x="0" y="0" width="{size_px}" height="{height}" '
            f'preserveAspectRatio="none" href="{_png_data_uri(_bin_image(image, factor))}"/>'
        )
    ]
    radius = 0.5 * box_px * scale
    parts += [
        f'<circle class="pick" cx="{x * scale:.1f}" cy="{y * scale:.1f}" r="{radius:.1f}" '
        'fill="none" stroke="#2ca02c" stroke-width="1.2"/>'
        for x, y in picks
    ]
    if title:
        parts.append(
            f'<text class="title" x="4" y="{height - 5}" fill="#fff">{escape(title)}</text>'
        )
    return _svg(parts, css="picks", width=size_px, height=height)


def ctf_fit_svg(
    freq_per_A: npt.ArrayLike,
    rotational_average: npt.ArrayLike,
    model: npt.ArrayLike,
    *,
    fit_resolution_A: float | None = None,
) -> str:
    """The background-subtracted rotational average of a power spectrum against the CTF model.

    Parameters
    ----------
    freq_per_A : array of shape (n,)
        Spatial frequency of each radial bin (1/Å).
    rotational_average : array of shape (n,)
        Measured rotational average (background subtracted, any scale).
    model : array of shape (n,)
        The fitted CTF² (or \\|CTF\\|) on the same bins and scale.
    fit_resolution_A : float, optional
        Resolution up to which the fit holds (Å); drawn as a vertical line at 1/resolution.

    Returns
    -------
    str
        ``<svg class="plot ctf-fit">`` with two ``polyline.curve`` and ``line.fit-resolution``.
    """
    freq = _as_1d("freq_per_A", freq_per_A)
    measured = _as_1d("rotational_average", rotational_average)
    fitted = _as_1d("model", model)
    if not measured.shape == fitted.shape == freq.shape:
        raise ValueError(
            f"rotational_average {measured.shape} and model {fitted.shape} must match "
            f"freq_per_A {freq.shape}"
        )
    extra: list[str] = []
    series = [Series(freq, measured, "rotational average"), Series(freq, fitted, "CTF model")]
    title = "CTF fit"
    if fit_resolution_A is not None:
        if fit_resolution_A <= 0:
            raise ValueError(f"fit_resolution_A: must be positive, got {fit_resolution_A}")
        title = f"CTF fit to {fit_resolution_A:.2f} Å"
    y_lo = float(min(np.nanmin(measured), np.nanmin(fitted)))
    y_hi = float(max(np.nanmax(measured), np.nanmax(fitted)))
    axes = _Axes((float(freq.min()), float(freq.max())), (y_lo, y_hi), title)
    if fit_resolution_A is not None:
        sx, _ = axes.px(np.array(1.0 / fit_resolution_A), np.array(y_lo))
        extra.append(
            f'<line class="fit-resolution" x1="{sx:.1f}" x2="{sx:.1f}" y1="{axes.top}" '
            f'y2="{axes.bottom}" stroke="#888" stroke-dasharray="4 3"/>'
        )
    return line_plot(
        series, title=title, x_label="spatial frequency (1/Å)", y_label="power (a.u.)",
        css="ctf-fit", y_range=(y_lo, y_hi), extra=extra,
    )  # fmt: skip


def histogram_svg(
    values: npt.ArrayLike, *, title: str, x_label: str, css: str, bins: int = 30
) -> str:
    """A histogram as bars; finite values only.

    Parameters
    ----------
    values : array of shape (n,)
        The values, in the unit ``x_label`` names.
    title, x_label : str
        Texts.
    css : str
        Class of the ``<svg>``.
    bins : int, optional
        Number of equal-width bins.

    Returns
    -------
    str
        ``<svg class="plot {css}">`` with one ``rect.bar`` per non-empty bin.
    """
    data = _as_1d("values", values)
    data = data[np.isfinite(data)]
    if data.size == 0:
        raise ValueError("values: no finite value to plot")
    if bins < 1:
        raise ValueError(f"bins: must be at least 1, got {bins}")
    counts, edges = np.histogram(data, bins=bins)
    axes = _Axes((float(edges[0]), float(edges[-1])), (0.0, float(counts.max())), title)
    parts = axes.frame(x_label, "count")
    for count, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
        if count == 0:
            continue
        (x0, x1), (y0, y1) = axes.px(np.array([lo, hi]), np.array([0.0, float(count)]))
        parts.append(
            f'<rect class="bar" x="{x0:.1f}" y="{y1:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
            f'height="{y0 - y1:.1f}" fill="{PALETTE[0]}"><title>{count}</title></rect>'
        )
    return _svg(parts, css=css)


def defocus_histogram_svg(defocus_A: npt.ArrayLike, *, bins: int = 30) -> str:
    """Distribution of the mean defocus of the exposures.

    Parameters
    ----------
    defocus_A : array of shape (n_exposures,)
        Defocus in Å (positive for underfocus); shown in µm.
    bins : int, optional
        Number of bins.

    Returns
    -------
    str
        ``<svg class="plot defocus">`` with ``rect.bar`` elements.
    """
    microns = _as_1d("defocus_A", defocus_A) / 1e4
    return histogram_svg(
        microns, title=f"Defocus of {microns.size} exposures", x_label="defocus (µm)",
        css="defocus", bins=bins,
    )  # fmt: skip


def class_gallery_svg(
    averages: npt.ArrayLike, sizes: npt.ArrayLike, *, tile_px: int = 96, columns: int = 8
) -> str:
    """2D class averages as a gallery, largest class first, each captioned with its size.

    Parameters
    ----------
    averages : array of shape (n_classes, box, box)
        Class averages.
    sizes : array of shape (n_classes,)
        Number of particles in each class.
    tile_px : int, optional
        Width of one tile on screen (px).
    columns : int, optional
        Tiles per row.

    Returns
    -------
    str
        ``<svg class="plot classes">`` with one ``g.class-average`` (image and caption) per class.
    """
    stack = np.asarray(averages, dtype=np.float32)
    counts = np.asarray(sizes).astype(np.int64)
    if stack.ndim != 3:
        raise ValueError(f"averages: expected shape (n_classes, box, box), got {stack.shape}")
    if counts.shape != (stack.shape[0],):
        raise ValueError(f"sizes: expected shape ({stack.shape[0]},), got {counts.shape}")
    if columns < 1 or tile_px < 8:
        raise ValueError(f"columns ({columns}) must be >= 1 and tile_px ({tile_px}) >= 8")
    order = np.argsort(-counts, kind="stable")
    caption_px = 14
    rows = math.ceil(stack.shape[0] / columns)
    width = min(columns, stack.shape[0]) * tile_px
    height = rows * (tile_px + caption_px)
    parts = []
    for slot, index in enumerate(order):
        x = (slot % columns) * tile_px
        y = (slot // columns) * (tile_px + caption_px)
        parts.append(
            f'<g class="class-average" data-class="{int(index)}">'
            f'<image x="{x + 1}" y="{y + 1}" width="{tile_px - 2}" height="{tile_px - 2}" '
            f'href="{_png_data_uri(stack[index])}"/>'
            f'<text x="{x + tile_px / 2}" y="{y + tile_px + 11}" text-anchor="middle">'
            f"#{int(index)}: {int(counts[index])}</text></g>"
        )
    return _svg(parts, css="classes", width=width, height=height)


def fsc_resolution_A(
    freq_per_A: npt.ArrayLike, fsc: npt.ArrayLike, *, threshold: float = FSC_THRESHOLD
) -> float | None:
    """Resolution where the FSC first falls below ``threshold`` (linear interpolation).

    Parameters
    ----------
    freq_per_A : array of shape (n,)
        Shell frequencies (1/Å), increasing.
    fsc : array of shape (n,)
        Fourier shell correlation per shell.
    threshold : float, optional
        Threshold (0.143 for gold-standard half maps).

    Returns
    -------
    float or None
        The resolution in Å, or None when the curve never crosses (resolution at Nyquist or
        better, reported as the last shell would overstate it).
    """
    freq, curve = _as_1d("freq_per_A", freq_per_A), _as_1d("fsc", fsc)
    if freq.shape != curve.shape:
        raise ValueError(f"fsc: shape {curve.shape} does not match freq_per_A {freq.shape}")
    below = np.flatnonzero(curve < threshold)
    below = below[below > 0]
    if below.size == 0:
        return None
    i = int(below[0])
    f0, f1, c0, c1 = freq[i - 1], freq[i], curve[i - 1], curve[i]
    crossing = f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0)
    return float(1.0 / crossing) if crossing > 0 else None


def fsc_svg(
    freq_per_A: npt.ArrayLike,
    curves: dict[str, npt.ArrayLike],
    *,
    threshold: float = FSC_THRESHOLD,
) -> str:
    """FSC curves with the threshold line and the resolution of the first curve.

    Parameters
    ----------
    freq_per_A : array of shape (n,)
        Shell frequencies (1/Å).
    curves : dict of str to array of shape (n,)
        Named FSC curves (``"unmasked"``, ``"masked"``); the first gives the stated resolution.
    threshold : float, optional
        The threshold drawn as ``line.threshold`` (0.143).

    Returns
    -------
    str
        ``<svg class="plot fsc">`` with one ``polyline.curve`` per curve, ``line.threshold``,
        and ``text.resolution`` when the first curve crosses the threshold.
    """
    freq = _as_1d("freq_per_A", freq_per_A)
    if not curves:
        raise ValueError("curves: at least one FSC curve is needed")
    series = [Series(freq, _as_1d(f"curves[{k!r}]", v), k) for k, v in curves.items()]
    resolution = fsc_resolution_A(freq, series[0].y, threshold=threshold)
    stated = "not reached" if resolution is None else f"{resolution:.2f} Å"
    title = f"FSC: {stated} at {threshold:g}"
    axes = _Axes((float(freq.min()), float(freq.max())), (-0.1, 1.05), title)
    _, sy = axes.px(np.array(freq.min()), np.array(threshold))
    extra = [
        (
            f'<line class="threshold" x1="{axes.left}" x2="{axes.right}" y1="{sy:.1f}" '
            f'y2="{sy:.1f}" stroke="#888" stroke-dasharray="4 3"/>'
        )
    ]
    if resolution is not None:
        sx, _ = axes.px(np.array(1.0 / resolution), np.array(threshold))
        extra.append(
            f'<text class="resolution" x="{sx + 4:.1f}" y="{sy - 4:.1f}">{resolution:.2f} Å</text>'
        )
    return line_plot(
        series, title=title, x_label="spatial frequency (1/Å)", y_label="FSC", css="fsc",
        y_range=(-0.1, 1.05), extra=extra,
    )  # fmt: skip


def volume_views_svg(volume: npt.ArrayLike, *, pixel_size_A: float, tile_px: int = 160) -> str:
    """Central orthogonal slices (XY, XZ, YZ) and the projection along Z of a volume.

    Parameters
    ----------
    volume : array of shape (nz, ny, nx)
        The map.
    pixel_size_A : float
        Voxel size (Å), printed with the box size.
    tile_px : int, optional
        Width of one view on screen (px).

    Returns
    -------
    str
        ``<svg class="plot volume">`` with four ``g.view`` (three slices and a projection).
    """
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"volume: expected shape (nz, ny, nx), got {vol.shape}")
    if pixel_size_A <= 0:
        raise ValueError(f"pixel_size_A: must be positive, got {pixel_size_A}")
    nz, ny, nx = vol.shape
    views = (
        ("slice XY", vol[nz // 2]),
        ("slice XZ", vol[:, ny // 2, :]),
        ("slice YZ", vol[:, :, nx // 2]),
        ("projection Z", vol.sum(axis=0, dtype=np.float32)),
    )
    caption_px = 14
    parts = []
    for i, (name, image) in enumerate(views):
        x = i * tile_px
        parts.append(
            f'<g class="view" data-view="{name}"><image x="{x + 1}" y="{caption_px}" '
            f'width="{tile_px - 2}" height="{tile_px - 2}" href="{_png_data_uri(image)}"/>'
            f'<text x="{x + tile_px / 2}" y="11" text-anchor="middle">{name}</text></g>'
        )
    box_A = nx * pixel_size_A
    parts.append(
        f'<text class="caption" x="4" y="{tile_px + caption_px + 12}">{nx} px box, '
        f"{pixel_size_A:.3g} Å/px ({box_A:.0f} Å)</text>"
    )
    return _svg(parts, css="volume", width=4 * tile_px, height=tile_px + caption_px + 18)
