"""The CTF job's plot data: the spectrum's rotational average follows the fitted model."""

from __future__ import annotations

import numpy as np
from cryokube.processing.algorithms.ctf_fit import estimate_ctf
from cryokube.processing.jobs.ctf_estimation import fit_curve
from cryokube.processing.simulate import phantom_volume, simulate_micrograph


def test_rotational_average_correlates_with_the_model() -> None:
    volume = phantom_volume(32, 2.0, seed=1).volume
    micrograph = simulate_micrograph(
        volume, 2.0, shape=(512, 512), n_particles=20, snr=1.0, defocus_u_A=15100.0,
        defocus_v_A=14900.0, astig_angle_deg=0.0, carbon_fraction=0.0, seed=3,
    )  # fmt: skip
    optics = {"voltage_kV": 300.0, "cs_mm": 2.7, "amp_contrast": 0.07}
    fit = estimate_ctf(micrograph.image, pixel_size_A=2.0, box_px=128,
                       resolution_band_A=(30.0, 6.0), defocus_range_A=(5000.0, 30000.0),
                       **optics)  # fmt: skip
    curve = fit_curve(micrograph.image, fit, pixel_size_A=2.0, box_px=128, **optics)
    freq, data, model = curve
    assert curve.shape == (3, 64)
    assert np.all(np.diff(freq) > 0)
    assert freq[-1] == np.float32(0.25)  # Nyquist of 2 A/px, in 1/A
    band = (freq > 1 / 30) & (freq < 1 / 8)
    assert np.corrcoef(data[band], model[band])[0, 1] > 0.5
