"""Peer tools for the benchmarks, installed into ``benchmarks/.peers/`` on demand.

- RELION 3.1.3 from Debian: ``apt-get download`` of ``relion`` and the libraries it needs that
  this machine lacks, unpacked with ``dpkg -x`` into ``.peers/relion`` (no system install);
  run with ``LD_LIBRARY_PATH`` pointing there.
- ASPIRE from PyPI: ``uv pip install --target .peers/aspire aspire``, run in a child Python
  with that folder first on ``PYTHONPATH``.
- cryoDRGN from PyPI into its own virtualenv ``.peers/cryodrgn`` (``uv venv``, ``uv pip
  install``): it needs torch, whose PyPI wheel brings the CUDA libraries (about 6 GB in all;
  no CPU-only torch wheel is on PyPI). With no GPU here it runs on the CPU.

Every runner returns a :class:`PeerResult`; when a peer cannot be installed or fails, its
``seconds`` is None and ``notes`` says why, so the benchmark still reports our own figures.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from harness import run_process

PEERS = Path(__file__).resolve().parents[1] / ".peers"
REPO = PEERS.parents[1]


@dataclass
class PeerResult:
    """One peer run: wall and CPU seconds, accuracy in the benchmark's unit, peak RSS, notes."""

    name: str
    seconds: float | None = None
    accuracy: float | None = None
    peak_MB: float | None = None
    notes: str = ""
    cpu_s: float | None = None


def _tail(text: str, n: int = 300) -> str:
    return " ".join(text.split())[-n:]


def relion_root() -> Path | str:
    """Unpack RELION 3.1.3 and its missing libraries; the root folder, or why it failed."""
    root = PEERS / "relion"
    if (root / "usr" / "bin" / "relion_run_motioncorr").exists():
        return root
    debs = PEERS / "relion-debs"
    debs.mkdir(parents=True, exist_ok=True)
    plan = subprocess.run(
        ["apt-get", "install", "--simulate", "-y", "relion"],
        check=False,
        capture_output=True,
        text=True,
    )
    packages = re.findall(r"^Inst (\S+)", plan.stdout, flags=re.MULTILINE)
    if not packages:
        return f"apt-get cannot plan relion: {_tail(plan.stdout + plan.stderr)}"
    download = subprocess.run(
        ["apt-get", "download", *packages], cwd=debs, check=False, capture_output=True, text=True
    )
    if download.returncode != 0:
        return f"apt-get download failed: {_tail(download.stderr)}"
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def _relion_env(root: Path) -> dict[str, str]:
    libs = [root / "usr" / "lib" / "x86_64-linux-gnu", root / "usr" / "lib"]
    libs += list((root / "usr" / "lib" / "x86_64-linux-gnu" / "openmpi").glob("lib"))
    return {
        "LD_LIBRARY_PATH": ":".join(str(p) for p in libs),
        "PATH": f"{root / 'usr' / 'bin'}:{os.environ.get('PATH', '')}",
        "OMPI_MCA_plm": "isolated",
    }


def _star_table(path: Path, block: str) -> dict[str, list[str]]:
    """Columns of one block of a STAR file (a minimal reader for RELION's outputs)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == f"data_{block}")
    names: list[str] = []
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        text = line.strip()
        if text.startswith("data_"):
            break
        if text.startswith("_rln"):
            names.append(text.split()[0][1:])
        elif text and not text.startswith(("loop_", "#")) and names:
            rows.append(text.split())
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


def _trajectory_rms_px(found: np.ndarray, truth: np.ndarray) -> float:
    """RMS trajectory error (px) after removing the mean offset, for the best sign per axis.

    A tool may report the drift or the correction that undoes it, and RELION's y axis points
    the other way from array rows, so each axis's sign is taken as the one that fits best.
    """
    errors = []
    for signs in ((1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)):
        error = np.asarray(signs) * found - truth
        error -= error.mean(axis=0)
        errors.append(float(np.sqrt(np.mean(np.sum(error**2, axis=1)))))
    return min(errors)


def relion_motioncorr(
    movie: Path, *, pixel_size_A: float, dose: float, truth_shifts_px: np.ndarray
) -> PeerResult:
    """``relion_run_motioncorr --use_own --j 2`` on one movie, global trajectory vs truth."""
    name = "RELION 3.1.3 relion_run_motioncorr --use_own --j 2"
    root = relion_root()
    if isinstance(root, str):
        return PeerResult(name, notes=root)
    work = movie.parent
    (work / "movies.star").write_text(
        "data_optics\nloop_\n_rlnOpticsGroupName #1\n_rlnOpticsGroup #2\n"
        "_rlnMicrographOriginalPixelSize #3\n_rlnVoltage #4\n_rlnSphericalAberration #5\n"
        f"_rlnAmplitudeContrast #6\nopticsGroup1 1 {pixel_size_A} 300 2.7 0.1\n\n"
        f"data_movies\nloop_\n_rlnMicrographMovieName #1\n_rlnOpticsGroup #2\n{movie.name} 1\n"
    )
    run = run_process(
        [
            "relion_run_motioncorr",
            "--i", "movies.star", "--o", "relion/", "--use_own", "--j", "2",
            "--bfactor", "150", "--patch_x", "5", "--patch_y", "5",
            "--dose_weighting", "--dose_per_frame", str(dose), "--preexposure", "0",
        ],
        cwd=work,
        env=_relion_env(root),
        timeout_s=3600,
    )  # fmt: skip
    out = work / "relion" / f"{movie.stem}.star"
    if run.returncode != 0 or not out.exists():
        return PeerResult(name, notes=f"failed (rc {run.returncode}): {_tail(run.output)}")
    shifts = _star_table(out, "global_shift")
    dx = np.asarray(shifts["rlnMicrographShiftX"], dtype=float)
    dy = np.asarray(shifts["rlnMicrographShiftY"], dtype=float)
    return PeerResult(
        name,
        seconds=run.wall_s,
        peak_MB=run.peak_rss_MB,
        notes="ran",
        accuracy=_trajectory_rms_px(np.stack([dy, dx], axis=1), truth_shifts_px),
        cpu_s=run.cpu_s,
    )


def relion_autopick_log(
    images: Sequence[np.ndarray],
    truths_yx: Sequence[np.ndarray],
    folder: Path,
    *,
    pixel_size_A: float,
    diameter_range_A: tuple[float, float],
    match_radius_px: float,
) -> PeerResult:
    """``relion_autopick --LoG`` on the micrographs; worst min(precision, recall) vs truth."""
    from cryokube.processing.io.mrc import write_mrc
    from scipy.spatial import cKDTree

    name = "RELION 3.1.3 relion_autopick --LoG"
    root = relion_root()
    if isinstance(root, str):
        return PeerResult(name, notes=root)
    lines = [
        "data_optics", "loop_", "_rlnOpticsGroupName #1", "_rlnOpticsGroup #2",
        "_rlnMicrographPixelSize #3", "_rlnVoltage #4", "_rlnSphericalAberration #5",
        "_rlnAmplitudeContrast #6", f"opticsGroup1 1 {pixel_size_A} 300 2.7 0.1", "",
        "data_micrographs", "loop_", "_rlnMicrographName #1", "_rlnOpticsGroup #2",
    ]  # fmt: skip
    for i, image in enumerate(images):
        write_mrc(folder / f"mic_{i}.mrc", image, pixel_size_A=pixel_size_A)
        lines.append(f"mic_{i}.mrc 1")
    (folder / "micrographs.star").write_text("\n".join(lines) + "\n")
    run = run_process(
        [
            "relion_autopick", "--i", "micrographs.star", "--odir", "picks/",
            "--pickname", "autopick", "--LoG", "--LoG_diam_min", str(diameter_range_A[0]),
            "--LoG_diam_max", str(diameter_range_A[1]), "--shrink", "0", "--lowpass", "20",
            "--LoG_adjust_threshold", "0", "--angpix", str(pixel_size_A),
        ],
        cwd=folder,
        env=_relion_env(root),
        timeout_s=3600,
    )  # fmt: skip
    if run.returncode != 0:
        return PeerResult(name, notes=f"failed (rc {run.returncode}): {_tail(run.output)}")
    scores = []
    for i, truth in enumerate(truths_yx):
        found = list((folder / "picks").glob(f"mic_{i}_autopick.star"))
        if not found:
            return PeerResult(name, notes=f"no picks file for mic_{i}: {_tail(run.output)}")
        table = _star_table(found[0], "")
        picks = np.stack(
            [
                np.asarray(table["rlnCoordinateY"], dtype=float),
                np.asarray(table["rlnCoordinateX"], dtype=float),
            ],
            axis=1,
        )
        distance, nearest = cKDTree(truth).query(picks)
        matched = len(set(nearest[distance < match_radius_px].tolist()))
        scores.append(min(matched / max(len(picks), 1), matched / len(truth)))
    return PeerResult(
        name, seconds=run.wall_s, accuracy=min(scores), peak_MB=run.peak_rss_MB, notes="ran"
    )


def aspire_target() -> Path | str:
    """Install ASPIRE from PyPI into ``.peers/aspire``; the folder, or why it failed."""
    target = PEERS / "aspire"
    if not (target / "aspire").is_dir():
        install = subprocess.run(
            [str(REPO / ".venv" / "bin" / "uv"), "pip", "install", "--python", sys.executable,
             "--target", str(target), "aspire"],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        if install.returncode != 0:
            return f"pip install aspire failed: {_tail(install.stderr)}"
    return target


def aspire_ctf(
    folder: Path,
    defoci_A: Sequence[float],
    *,
    pixel_size_A: float,
    voltage_kV: float,
    cs_mm: float,
    amp_contrast: float,
) -> PeerResult:
    """``aspire.ctf.estimate_ctf`` on every ``mic_{i}.mrc`` of ``folder`` (psd 512, 30-5 A)."""
    name = "ASPIRE estimate_ctf"
    target = aspire_target()
    if isinstance(target, str):
        return PeerResult(name, notes=target)
    script = (
        "import json, sys\n"
        "from aspire.ctf import estimate_ctf\n"
        f"r = estimate_ctf({str(folder)!r}, pixel_size={pixel_size_A}, cs={cs_mm}, "
        f"amplitude_contrast={amp_contrast}, voltage={voltage_kV}, num_tapers=2, psd_size=512, "
        f"g_min=30, g_max=5, output_dir={str(folder / 'aspire')!r})\n"
        "print('RESULT' + json.dumps({k: (float(v['defocus_u']), float(v['defocus_v'])) "
        "for k, v in r.items()}))\n"
    )
    run = run_process(
        [sys.executable, "-c", script], env={"PYTHONPATH": str(target)}, timeout_s=3600
    )
    match = re.search(r"RESULT(\{.*\})", run.output)
    if run.returncode != 0 or match is None:
        return PeerResult(name, notes=f"failed (rc {run.returncode}): {_tail(run.output)}")
    found = json.loads(match.group(1))
    errors = [abs(0.5 * sum(found[f"mic_{i}.mrc"]) / d - 1) * 100 for i, d in enumerate(defoci_A)]
    return PeerResult(
        name, seconds=run.wall_s, accuracy=max(errors), peak_MB=run.peak_rss_MB, notes="ran"
    )


def relion_reconstruct(folder: Path, star: str, out: str) -> PeerResult:
    """``relion_reconstruct --ctf`` of the particles in ``folder/star`` into ``folder/out``.

    RELION 3.1's reconstruct is single-threaded (it has no ``--j``); the wall time includes
    reading the STAR file and the image stack.
    """
    name = "RELION 3.1.3 relion_reconstruct --ctf"
    root = relion_root()
    if isinstance(root, str):
        return PeerResult(name, notes=root)
    run = run_process(
        ["relion_reconstruct", "--i", star, "--o", out, "--ctf"],
        cwd=folder,
        env=_relion_env(root),
        timeout_s=3600,
    )
    if run.returncode != 0 or not (folder / out).exists():
        return PeerResult(name, notes=f"failed (rc {run.returncode}): {_tail(run.output)}")
    return PeerResult(name, seconds=run.wall_s, peak_MB=run.peak_rss_MB, notes="ran")


def aspire_mean_estimator(folder: Path, star: str, out: str, *, max_iterations: int) -> PeerResult:
    """ASPIRE's ``MeanEstimator`` (least squares by conjugate gradient, circulant
    preconditioner) on ``RelionSource(folder/star)``; the volume saved as ``folder/out`` (.npy).

    ASPIRE reads the poses, offsets and CTFs from the STAR file with its own RELION importer.
    """
    name = f"ASPIRE MeanEstimator (RelionSource, maxiter {max_iterations})"
    target = aspire_target()
    if isinstance(target, str):
        return PeerResult(name, notes=target)
    script = (
        "import numpy as np\n"
        "from aspire.reconstruction import MeanEstimator\n"
        "from aspire.source import RelionSource\n"
        f"src = RelionSource({str(folder / star)!r}, data_folder={str(folder)!r})\n"
        f"volume = MeanEstimator(src, batch_size=512, maxiter={max_iterations}).estimate()\n"
        f"np.save({str(folder / out)!r}, volume.asnumpy()[0])\n"
    )
    # MeanEstimator writes volume_checkpoint_iter*.npy into its working directory.
    run = run_process(
        [sys.executable, "-c", script],
        cwd=folder,
        env={"PYTHONPATH": str(target)},
        timeout_s=3600,
    )
    if run.returncode != 0 or not (folder / out).exists():
        return PeerResult(name, notes=f"failed (rc {run.returncode}): {_tail(run.output)}")
    return PeerResult(name, seconds=run.wall_s, peak_MB=run.peak_rss_MB, notes="ran")


CRYODRGN_VERSION = "4.3.1"


def cryodrgn_command() -> Path | str:
    """Install cryoDRGN from PyPI into the virtualenv ``.peers/cryodrgn``; its ``cryodrgn``
    command, or why it failed."""
    venv = PEERS / "cryodrgn"
    command = venv / "bin" / "cryodrgn"
    if not command.exists():
        uv = str(REPO / ".venv" / "bin" / "uv")
        for argv in (
            [uv, "venv", "--clear", "--python", sys.executable, str(venv)],
            [uv, "pip", "install", "--python", str(venv / "bin" / "python"),
             f"cryodrgn=={CRYODRGN_VERSION}"],
        ):  # fmt: skip
            step = subprocess.run(argv, check=False, capture_output=True, text=True)
            if step.returncode != 0:
                return f"uv {argv[1]} for cryoDRGN failed: {_tail(step.stderr)}"
    return command


def cryodrgn_backproject(folder: Path, star: str, out: str) -> PeerResult:
    """cryoDRGN's ``backproject_voxel`` of the particles in ``folder/star`` into
    ``folder/out/backproject.mrc``.

    The poses and CTFs come from ``folder/star`` through cryoDRGN's own RELION importers,
    ``parse_pose_star`` and ``parse_ctf_star`` (``--ps 0``: the file has no
    ``rlnPhaseShift``, which cryoDRGN would read as NaN), before the timed run. The run
    reads the stack itself (``--invert-data``, its default, for RELION's white protein) and
    makes the full map only (``--no-half-maps``, as ours and ``relion_reconstruct``), on the
    CPU with torch's default threads. ``seconds`` is cryoDRGN's own figure ("Backprojected N
    images in t s": reading the stack, poses and CTFs, and the insertion, without the
    interpreter's start and torch's import); the process's wall time is in ``notes``.
    """
    name = f"cryoDRGN {CRYODRGN_VERSION} backproject_voxel"
    command = cryodrgn_command()
    if isinstance(command, str):
        return PeerResult(name, notes=command)
    for argv in (
        ["parse_pose_star", star, "-o", "poses.pkl"],
        ["parse_ctf_star", star, "-o", "ctf.pkl", "--ps", "0"],
    ):
        step = run_process([str(command), *argv], cwd=folder, timeout_s=600)
        if step.returncode != 0:
            return PeerResult(name, notes=f"{argv[0]} failed: {_tail(step.output)}")
    run = run_process(
        [str(command), "backproject_voxel", "particles.mrcs", "--poses", "poses.pkl",
         "--ctf", "ctf.pkl", "-o", out, "--no-half-maps"],
        cwd=folder, timeout_s=3600,
    )  # fmt: skip
    timed = re.search(r"Backprojected [\d,]+ images in ([\d.]+)s", run.output)
    if run.returncode != 0 or timed is None or not (folder / out / "backproject.mrc").exists():
        return PeerResult(name, notes=f"failed (rc {run.returncode}): {_tail(run.output)}")
    return PeerResult(
        name,
        seconds=float(timed.group(1)),
        peak_MB=run.peak_rss_MB,
        notes=f"ran; process wall time {run.wall_s:.1f} s",
    )


def relion_class2d(
    folder: Path,
    star: str,
    *,
    n_classes: int,
    iterations: int,
    psi_step_deg: float,
    offset_range_px: int,
    max_resolution_A: float,
    particle_diameter_A: float,
) -> tuple[PeerResult, np.ndarray | None]:
    """``relion_refine`` 2D classification (``--j 2``, no CTF) of ``folder/star``.

    The in-plane and shift samplings are the finest ones after RELION's adaptive oversampling
    (order 1 halves the given steps). Returns the run and each particle's final class
    (0-based), or None when it did not run.
    """
    name = f"RELION 3.1.3 relion_refine Class2D --j 2 ({iterations} iterations)"
    root = relion_root()
    if isinstance(root, str):
        return PeerResult(name, notes=root), None
    (folder / "class2d").mkdir(exist_ok=True)
    run = run_process(
        [
            "relion_refine", "--i", star, "--o", "class2d/run", "--K", str(n_classes),
            "--iter", str(iterations), "--tau2_fudge", "2", "--particle_diameter",
            str(particle_diameter_A), "--flatten_solvent", "--zero_mask", "--oversampling", "1",
            "--psi_step", str(2 * psi_step_deg), "--offset_range", str(offset_range_px),
            "--offset_step", "2", "--strict_highres_exp", str(max_resolution_A), "--norm",
            "--scale", "--j", "2", "--pool", "30", "--dont_combine_weights_via_disc",
            "--random_seed", "0",
        ],
        cwd=folder,
        env=_relion_env(root),
        timeout_s=3600,
    )  # fmt: skip
    out = folder / "class2d" / f"run_it{iterations:03d}_data.star"
    if run.returncode != 0 or not out.exists():
        return PeerResult(name, notes=f"failed (rc {run.returncode}): {_tail(run.output)}"), None
    classes = np.asarray(_star_table(out, "particles")["rlnClassNumber"], dtype=np.int64) - 1
    return PeerResult(name, seconds=run.wall_s, peak_MB=run.peak_rss_MB, notes="ran"), classes


@dataclass
class AutoRefineOutput:
    """What ``relion_autorefine`` read back: the last iteration's particles and map."""

    particles: dict[str, list[str]]
    volume: np.ndarray
    iterations: int
    converged: bool
    gold_standard_A: float


def relion_autorefine(
    folder: Path,
    star: str,
    reference: str,
    *,
    iterations: int,
    initial_resolution_A: float,
    healpix_order: int,
    offset_range_px: int,
    particle_diameter_A: float,
) -> tuple[PeerResult, AutoRefineOutput | None]:
    """``relion_refine_mpi --auto_refine --split_random_halves --ctf`` of ``folder/star``,
    stopped once it has written iteration ``iterations`` (or converged before).

    Three MPI ranks (a leader and one worker per half set, RELION's minimum for gold-standard
    refinement), one thread each, from ``reference`` low-passed to ``initial_resolution_A``.
    ``seconds`` is the time of the iterations alone: from the initial ``run_it000`` files to
    those of the last iteration (file times), so RELION's start-up is not counted; ``peak_MB``
    is the largest single process (rank) RSS. Returns the run and what it read back: the last
    iteration's particles, its map (RELION's final ``run_class001.mrc`` when it converged,
    else the mean of that iteration's half maps), the number of iterations, whether RELION's
    convergence test ended the run, and its gold-standard resolution (``rlnCurrentResolution``).
    """
    from cryokube.processing.io.mrc import read_mrc

    name = f"RELION 3.1.3 relion_refine_mpi --auto_refine (3 ranks, {iterations} iterations)"
    root = relion_root()
    if isinstance(root, str):
        return PeerResult(name, notes=root), None
    (folder / "refine").mkdir(exist_ok=True)
    env = _relion_env(root) | {
        "OPAL_PREFIX": str(root / "usr"),  # the unpacked Open MPI finds its components
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    }
    env.pop("OMPI_MCA_plm")  # mpirun launches its ranks itself
    command = [
        "mpirun.openmpi", "-np", "3", "--oversubscribe", "relion_refine_mpi",
        "--i", star, "--o", "refine/run", "--ref", reference, "--firstiter_cc",
        "--ini_high", str(initial_resolution_A), "--auto_refine", "--split_random_halves",
        "--ctf", "--particle_diameter", str(particle_diameter_A), "--flatten_solvent",
        "--zero_mask", "--oversampling", "1", "--healpix_order", str(healpix_order),
        "--auto_local_healpix_order", "4", "--offset_range", str(offset_range_px),
        "--offset_step", "1", "--sym", "C1", "--low_resol_join_halves", "40", "--norm",
        "--scale", "--j", "1", "--pool", "30", "--dont_combine_weights_via_disc",
        "--random_seed", "0",
    ]  # fmt: skip
    last = f"refine/run_it{iterations:03d}_data.star"
    # stop RELION once the iteration's files are written (a second's grace to finish them)
    script = (
        '"$@" & pid=$!; '
        f"while kill -0 $pid 2>/dev/null && [ ! -e {last} ]; do sleep 0.5; done; "
        "sleep 1; kill $pid 2>/dev/null; wait $pid; "
        f"test -e {last} || test -e refine/run_data.star"
    )
    # to convergence, auto-refine takes an hour or more on two loaded cores
    run = run_process(["sh", "-c", script, "sh", *command], cwd=folder, env=env, timeout_s=6 * 3600)
    refine = folder / "refine"
    converged = (refine / "run_data.star").exists()
    done = sorted(refine.glob("run_it[0-9][0-9][0-9]_data.star"))
    first = refine / "run_it000_data.star"
    if run.returncode != 0 or not first.exists() or len(done) < 2:
        return PeerResult(name, notes=f"failed (rc {run.returncode}): {_tail(run.output)}"), None
    n = int(done[-1].name[6:9])
    stem = "run" if converged else f"run_it{n:03d}"
    out = refine / f"{stem}_data.star"
    if converged:
        volume = read_mrc(refine / "run_class001.mrc")[0]
        model = refine / "run_model.star"
    else:
        halves = [read_mrc(refine / f"{stem}_half{h}_class001.mrc")[0] for h in (1, 2)]
        volume = (halves[0] + halves[1]) / 2
        model = refine / f"{stem}_half1_model.star"
    resolution = re.search(r"_rlnCurrentResolution\s+(\S+)", model.read_text())
    seconds = out.stat().st_mtime - first.stat().st_mtime
    result = PeerResult(name, seconds=seconds, peak_MB=run.peak_rss_MB, notes="ran")
    output = AutoRefineOutput(
        particles=_star_table(out, "particles"),
        volume=np.asarray(volume, dtype=np.float32),
        iterations=n,
        converged=converged,
        gold_standard_A=float(resolution.group(1)) if resolution else float("nan"),
    )
    return result, output
