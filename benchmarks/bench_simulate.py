"""The truth-generating layer: forward projection and the simulator (``make bench -k sim``).

- ``projection/fourier_slice``: views per second projecting a 128^3 phantom. The roofline is
  the one unavoidable step per view, an inverse ``rfft2`` of 128 x 128 at the measured
  ``fft_GFLOPs_2threads`` (interpolation is extra work a roofline cannot remove, so the ratio
  says how much of the time goes beyond the FFT). Accuracy: largest error against the analytic
  projections of the phantom's Gaussian atoms, as a fraction of the peak.
- Peer: ASPIRE's ``Volume.project`` (NUFFT) on the same volume and views, installed by this
  script into ``benchmarks/.peers/aspire`` with uv. ``ratio_to_peer`` = ASPIRE time / ours.
  Its projections are compared with ours under the convention ``ASPIRE rotation = A.T``
  stated in ``docs/conventions.md``.
- ``simulate/particles``: particle images per second (projection, CTF, shift, noise).
- ``simulate/movie``: counting frames per second, 2048^2 at 1 e/A^2 per frame, with and
  without local drift. Roofline: one memory pass over the frame's expected counts (float64
  rates, written and read once) and its counts at ``memory_bandwidth_GBps``, far below what
  Poisson sampling costs; the ratio says how far generation is from a streaming copy.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from cryokube.processing.algorithms.projection import project
from cryokube.processing.geometry import euler_to_matrix
from cryokube.processing.simulate import (
    phantom_volume,
    random_euler_angles,
    simulate_movie,
    simulate_particles,
)
from harness import Record, benchmark, best_time_s, peak_traced_MB, run_process
from limits import rfft2_flops

BOX = 128
PIXEL_SIZE_A = 1.5
N_VIEWS = 256
ASPIRE_VERSION = "0.14.3"
PEERS = Path(__file__).resolve().parent / ".peers"

_ASPIRE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from aspire.volume import Volume
    folder = sys.argv[1]
    vol = Volume(np.load(folder + "/volume.npy"))
    rots = np.load(folder + "/rotations.npy")
    vol.project(rots[:4])  # warm-up (plans, caches)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        images = vol.project(rots).asnumpy()
        best = min(best, time.perf_counter() - t0)
    np.save(folder + "/aspire.npy", images.astype(np.float32))
    print(f"BEST_S {best}")
    """
)


def _aspire_python() -> Path | None:
    """The peer's interpreter, installed on first use; None when it cannot be installed."""
    venv = PEERS / "aspire"
    python = venv / "bin" / "python"
    if python.exists():
        return python
    uv = Path(sys.executable).with_name("uv")
    try:
        subprocess.run([str(uv), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
        subprocess.run(
            [str(uv), "pip", "install", "-q", "--python", str(python), f"aspire=={ASPIRE_VERSION}"],
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return python


def _analytic_projections(phantom_positions_A: np.ndarray, weights: np.ndarray, sigma_A: float,
                          rotations: np.ndarray) -> np.ndarray:  # fmt: skip
    """Exact projections (sum along the beam, voxel units) of Gaussian atoms at each view."""
    axis = (np.arange(BOX) - BOX // 2) * PIXEL_SIZE_A
    out = np.zeros((len(rotations), BOX, BOX))
    sigma2 = sigma_A**2
    norm = PIXEL_SIZE_A**2 / (2 * np.pi * sigma2)
    for i, a in enumerate(rotations):
        xy = phantom_positions_A @ a.T
        gx = np.exp(-((axis[None, :] - xy[:, 0, None]) ** 2) / (2 * sigma2))  # (atoms, x)
        gy = np.exp(-((axis[None, :] - xy[:, 1, None]) ** 2) / (2 * sigma2))  # (atoms, y)
        out[i] = norm * np.einsum("a,ay,ax->yx", weights, gy, gx)
    return out


@benchmark("sim_projection")
def fourier_slice(machine: dict[str, float]) -> list[Record]:
    phantom = phantom_volume(BOX, PIXEL_SIZE_A, seed=0)
    rotations = np.asarray(euler_to_matrix(random_euler_angles(N_VIEWS, seed=1)))
    t = best_time_s(lambda: project(phantom.volume, rotations), repeat=3)
    peak = peak_traced_MB(lambda: project(phantom.volume, rotations))
    ours = project(phantom.volume, rotations)
    check = slice(0, 16)
    truth = _analytic_projections(
        phantom.atom_positions_A, phantom.atom_weights, phantom.atom_sigma_A, rotations[check]
    )
    error = float(np.abs(ours[check] - truth).max() / truth.max())
    fft_s = N_VIEWS * rfft2_flops(BOX, BOX) / (machine["fft_GFLOPs_2threads"] * 1e9)
    record = Record(
        f"projection/fourier_slice_{BOX}px",
        N_VIEWS / t,
        "views/s",
        ratio_to_limit=t / fft_s,
        limit="one irfft2 per view at fft_GFLOPs_2threads",
        accuracy=error,
        accuracy_unit="max |error| / peak vs analytic Gaussian-atom projections",
        peak_memory_MB=peak,
        notes=f"{len(phantom.atom_weights)} atoms, oversampling 2, trilinear, gridding-corrected",
    )
    python = _aspire_python()
    if python is None:
        record.notes = f"{record.notes}; ASPIRE {ASPIRE_VERSION} could not be installed"
        return [record]
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "volume.npy", phantom.volume)
        # ASPIRE's rotation for the view A is A.T (docs/conventions.md)
        np.save(Path(folder) / "rotations.npy", rotations.swapaxes(-1, -2).astype(np.float32))
        script = Path(folder) / "peer.py"
        script.write_text(_ASPIRE_SCRIPT)
        result = run_process([str(python), str(script), folder], timeout_s=1800)
        if result.returncode != 0:
            record.notes = f"{record.notes}; ASPIRE failed: {result.output[-300:]}"
            return [record]
        peer_s = float(result.output.split("BEST_S")[-1].split()[0])
        theirs = np.load(Path(folder) / "aspire.npy")
    record.peer = f"ASPIRE {ASPIRE_VERSION} Volume.project"
    record.ratio_to_peer = peer_s / t
    scale = np.sum(theirs[check] * truth) / np.sum(theirs[check] ** 2)
    record.extra = {
        "peer_accuracy": float(np.abs(scale * theirs[check] - truth).max() / truth.max()),
        "peer_scale_to_ours": float(scale),
        "peer_peak_rss_MB": result.peak_rss_MB,
    }
    return [record]


@benchmark("sim_particles")
def particles(machine: dict[str, float]) -> list[Record]:
    phantom = phantom_volume(BOX, PIXEL_SIZE_A, seed=0)
    n = 512
    t = best_time_s(lambda: simulate_particles(phantom.volume, PIXEL_SIZE_A, n, seed=2), repeat=2)
    # roofline: forward and inverse rfft2 per image (the CTF and shift are applied in between)
    fft_s = 2 * n * rfft2_flops(BOX, BOX) / (machine["fft_GFLOPs_2threads"] * 1e9)
    return [
        Record(
            f"simulate/particles_{BOX}px",
            n / t,
            "images/s",
            ratio_to_limit=t / fft_s,
            limit="two rfft2 per image at fft_GFLOPs_2threads",
            peak_memory_MB=peak_traced_MB(
                lambda: simulate_particles(phantom.volume, PIXEL_SIZE_A, n, seed=2)
            ),
        )
    ]


@benchmark("sim_movie")
def movie(machine: dict[str, float]) -> list[Record]:
    shape = (2048, 2048)
    n_frames = 8
    # rates written and read (float64), counts written (uint16): a streaming lower bound
    bytes_per_frame = shape[0] * shape[1] * (2 * 8 + 2)
    limit_s = n_frames * bytes_per_frame / (machine["memory_bandwidth_GBps"] * 1e9)
    records = []
    for local in (0.0, 1.0):

        def run(local: float = local) -> object:
            return simulate_movie(shape=shape, n_frames=n_frames, local_drift_px=local, seed=3)

        t = best_time_s(run, repeat=2)
        records.append(
            Record(
                f"simulate/movie_{shape[0]}px_{'local' if local else 'global'}_drift",
                n_frames / t,
                "frames/s",
                ratio_to_limit=t / limit_s,
                limit="one streaming pass of rates and counts at memory_bandwidth_GBps",
                peak_memory_MB=peak_traced_MB(run),
                notes="1 e/A^2 per frame at 1 A/px, Poisson counts, gain and hot pixels",
            )
        )
    return records
