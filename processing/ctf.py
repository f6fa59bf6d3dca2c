"""The contrast transfer function (CTF) of a bright-field transmission electron microscope.

One convention is used by the simulator, CTF estimation and correction (``docs/conventions.md``):

* **Sign.** The CTF is the physical transfer of the projected potential into image contrast,
  ``CTF = -sin(chi)``, negative at low frequency: in an underfocused raw image, protein is dark
  (cisTEM / CTFFIND / cryojax). RELION's ``CTF::getCTF`` returns ``-CTF`` because it works on
  contrast-inverted particle images (protein white).
* **Defocus.** Underfocus is positive (Å). ``defocus_u_A`` is the defocus along the direction
  at ``astig_angle_deg``, ``defocus_v_A`` along the perpendicular one, as RELION's
  ``rlnDefocusU/V`` and cryoSPARC's ``ctf/df1_A``, ``ctf/df2_A``.
* **Astigmatism angle.** Degrees, counter-clockwise from the x axis (array columns; y along
  rows) to the ``defocus_u_A`` direction, as RELION ``rlnDefocusAngle``, CTFFIND and cisTEM
  (cryoSPARC stores the same angle in radians, ``ctf/df_angle_rad``). The defocus at an angle
  ``theta = atan2(ky, kx)`` is ``(u + v)/2 + (u - v)/2 * cos(2 (theta - angle))``.
* **Phase.** ``chi = pi lambda df k^2 - (pi/2) Cs lambda^3 k^4 + phase_shift + w``,
  ``w = arctan(A / sqrt(1 - A^2))`` for amplitude contrast ``A``; a B-factor multiplies by
  ``exp(-B k^2 / 4)``. ``k`` is spatial frequency in 1/Å.
* **Wavelength.** The relativistic electron wavelength with CTFFIND4's and cisTEM's constants,
  ``lambda = 12.2639 / sqrt(V + 0.97845e-6 V^2)`` Å (V in volts), chosen so that our defocus
  values agree with CTFFIND4's on the same data. RELION's constants (12.2643247, 0.978466e-6,
  closer to CODATA) give wavelengths 3.5e-5 longer in relative terms: equivalent to a defocus
  difference of 3.5e-5 relative (0.5 Å at 1.5 um), far below what CTF fitting resolves.

References
----------
Rohou, A. & Grigorieff, N. (2015). CTFFIND4: Fast and accurate defocus estimation from
electron micrographs. J. Struct. Biol. 192, 216-221, doi:10.1016/j.jsb.2015.08.008.
Mindell, J. A. & Grigorieff, N. (2003). Accurate determination of local defocus and specimen
tilt in electron microscopy. J. Struct. Biol. 142, 334-347, doi:10.1016/S1047-8477(03)00069-8.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from cryokube.processing.backend import Array, array_module

__all__ = [
    "RELATIVISTIC_CORRECTION_PER_V",
    "WAVELENGTH_CONSTANT_A",
    "ctf_2d",
    "ctf_radial",
    "electron_wavelength_A",
]

WAVELENGTH_CONSTANT_A = 12.2639
"""h / sqrt(2 m0 e) in Å V^1/2, as CTFFIND4 and cisTEM write it."""

RELATIVISTIC_CORRECTION_PER_V = 0.97845e-6
"""e / (2 m0 c^2) in 1/V, as CTFFIND4 and cisTEM write it."""


def electron_wavelength_A(voltage_kV: Any) -> Array:
    """Relativistic electron wavelength.

    Parameters
    ----------
    voltage_kV : float or array
        Acceleration voltage in kV (for example 300).

    Returns
    -------
    wavelength_A : float64 array of the same shape
        ``12.2639 / sqrt(V + 0.97845e-6 V^2)`` in Å with V in volts (0.019687 Å at 300 kV).
    """
    xp = array_module(voltage_kV)
    volts = xp.asarray(voltage_kV, dtype=np.float64) * 1e3
    if bool(xp.any(volts <= 0)):
        raise ValueError(f"voltage_kV must be positive, got {voltage_kV}")
    return WAVELENGTH_CONSTANT_A / xp.sqrt(volts + RELATIVISTIC_CORRECTION_PER_V * volts**2)


def _check_range(xp: Any, value: Array, name: str, low: float, high: float) -> None:
    if bool(xp.any((value < low) | (value > high))):
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")


def _ctf_from_phase(
    xp: Any,
    k2_per_A2: Array,
    defocus_A: Array,
    *,
    voltage_kV: Any,
    cs_mm: Any,
    amp_contrast: Any,
    phase_shift_deg: Any,
    b_factor_A2: Any,
    dtype: Any,
) -> Array:
    """CTF at squared frequencies ``k2_per_A2`` and defocus ``defocus_A`` (broadcast together).

    The scalar parameters have the batch shape of ``defocus_A`` minus its trailing grid axes,
    already expanded by the caller.
    """
    amp = xp.asarray(amp_contrast, dtype=np.float64)
    _check_range(xp, amp, "amp_contrast", 0.0, 0.999)
    cs = xp.asarray(cs_mm, dtype=np.float64)
    _check_range(xp, cs, "cs_mm", 0.0, 100.0)
    lam = electron_wavelength_A(voltage_kV)
    cs_A = cs * 1e7
    k1 = (np.pi * lam).astype(dtype)
    k2 = (0.5 * np.pi * cs_A * lam**3).astype(dtype)
    offset = (
        xp.arctan(amp / xp.sqrt(1.0 - amp * amp))
        + xp.deg2rad(xp.asarray(phase_shift_deg, dtype=np.float64))
    ).astype(dtype)
    chi = k1 * defocus_A * k2_per_A2 - k2 * k2_per_A2 * k2_per_A2 + offset
    ctf = -xp.sin(chi)
    b = xp.asarray(b_factor_A2, dtype=dtype)
    if bool(xp.any(b != 0)):
        ctf = ctf * xp.exp(-0.25 * b * k2_per_A2)
    return ctf.astype(dtype, copy=False)


def ctf_2d(
    shape: tuple[int, ...],
    pixel_size_A: float,
    *,
    defocus_u_A: Any,
    defocus_v_A: Any,
    astig_angle_deg: Any,
    voltage_kV: Any,
    cs_mm: Any,
    amp_contrast: Any,
    phase_shift_deg: Any = 0.0,
    b_factor_A2: Any = 0.0,
    dtype: Any = np.float32,
) -> Array:
    """The CTF on the ``rfft2`` grid of images of ``shape``, batched over parameter arrays.

    Parameters
    ----------
    shape : tuple of int
        Real-space image shape ``(ny, nx)`` in px.
    pixel_size_A : float
        Pixel size in Å.
    defocus_u_A, defocus_v_A : float or array of shape batch
        Defocus along the astigmatism direction and perpendicular to it, in Å (underfocus
        positive).
    astig_angle_deg : float or array of shape batch
        Angle from the x axis to the ``defocus_u_A`` direction, in degrees (RELION/CTFFIND).
    voltage_kV : float or array of shape batch
        Acceleration voltage in kV.
    cs_mm : float or array of shape batch
        Spherical aberration in mm.
    amp_contrast : float or array of shape batch
        Amplitude contrast fraction in [0, 1) (for example 0.07 or 0.1).
    phase_shift_deg : float or array of shape batch, optional
        Extra phase shift in degrees (phase plate).
    b_factor_A2 : float or array of shape batch, optional
        Envelope B-factor in Å^2; the CTF is multiplied by ``exp(-B k^2 / 4)``.
    dtype : dtype, optional
        float32 (default) or float64.

    Returns
    -------
    ctf : array of shape (*batch, ny, nx//2 + 1)
        Dimensionless CTF values, ``-sin(chi)`` times the envelope, on the array module of the
        parameters; ``batch`` is the broadcast shape of all parameters.

    Notes
    -----
    Conventions (sign, angle, wavelength constants) are those of the module docstring.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (ny, nx) with positive sizes, got {shape}")
    if not pixel_size_A > 0:
        raise ValueError(f"pixel_size_A must be positive, got {pixel_size_A}")
    params = [defocus_u_A, defocus_v_A, astig_angle_deg, voltage_kV, cs_mm, amp_contrast]
    params += [phase_shift_deg, b_factor_A2]
    xp = array_module(*[p for p in params if hasattr(p, "shape")])
    arrays = xp.broadcast_arrays(*[xp.asarray(p, dtype=np.float64) for p in params])
    batch = arrays[0].shape
    expanded = [a.reshape((*batch, 1, 1)) for a in arrays]
    du, dv, angle, kv, cs, amp, phase, bfac = expanded
    ky = (xp.fft.fftfreq(shape[0]) / pixel_size_A).astype(dtype)[:, None]
    kx = (xp.fft.rfftfreq(shape[1]) / pixel_size_A).astype(dtype)[None, :]
    k2 = kx * kx + ky * ky
    theta = xp.arctan2(ky, kx)
    defocus = 0.5 * (du + dv) + 0.5 * (du - dv) * xp.cos(2.0 * (theta - xp.deg2rad(angle)))
    return _ctf_from_phase(
        xp,
        k2,
        defocus.astype(dtype),
        voltage_kV=kv,
        cs_mm=cs,
        amp_contrast=amp,
        phase_shift_deg=phase,
        b_factor_A2=bfac,
        dtype=dtype,
    )


def ctf_radial(
    frequency_per_A: Array,
    *,
    defocus_A: Any,
    voltage_kV: Any,
    cs_mm: Any,
    amp_contrast: Any,
    phase_shift_deg: Any = 0.0,
    b_factor_A2: Any = 0.0,
    dtype: Any = np.float32,
) -> Array:
    """The CTF of a non-astigmatic microscope along spatial frequency (for 1D fitting).

    Parameters
    ----------
    frequency_per_A : array of shape (n,)
        Spatial frequencies in 1/Å.
    defocus_A : float or array of shape batch
        Defocus in Å, underfocus positive (the mean defocus ``(u + v)/2`` for an
        astigmatic image averaged over angle).
    voltage_kV, cs_mm, amp_contrast, phase_shift_deg, b_factor_A2 : float or array of shape batch
        As for :func:`ctf_2d`.
    dtype : dtype, optional
        float32 (default) or float64.

    Returns
    -------
    ctf : array of shape (*batch, n)
        Dimensionless CTF values with the conventions of :func:`ctf_2d`.
    """
    params = [defocus_A, voltage_kV, cs_mm, amp_contrast, phase_shift_deg, b_factor_A2]
    xp = array_module(frequency_per_A, *[p for p in params if hasattr(p, "shape")])
    k = xp.asarray(frequency_per_A, dtype=dtype)
    if k.ndim != 1:
        raise ValueError(f"frequency_per_A must be 1D, got shape {k.shape}")
    arrays = xp.broadcast_arrays(*[xp.asarray(p, dtype=np.float64) for p in params])
    batch = arrays[0].shape
    df, kv, cs, amp, phase, bfac = (a.reshape((*batch, 1)) for a in arrays)
    return _ctf_from_phase(
        xp,
        k * k,
        df.astype(dtype),
        voltage_kV=kv,
        cs_mm=cs,
        amp_contrast=amp,
        phase_shift_deg=phase,
        b_factor_A2=bfac,
        dtype=dtype,
    )
