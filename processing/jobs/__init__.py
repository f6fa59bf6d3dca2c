"""The job catalog: every job type CryoKube runs, with its parameters, inputs and outputs.

One module per job type declares ``JOB``, a :class:`~cryokube.processing.jobs.base.JobType`.
This package registers them all; :func:`get` and :func:`all` are the only lookups the operator,
the CLI, the API and the console use, so the catalog is the single source of validation.

Examples
--------
>>> from cryokube.processing import jobs
>>> jobs.get("ctf_estimation").params.model_validate({"res_max_align": 4}).res_max_align
4.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import (
    ab_initio,
    blob_picker,
    classify_2d,
    ctf_estimation,
    export,
    extract_particles,
    homogeneous_refinement,
    import_micrographs,
    import_movies,
    import_particles,
    import_volume,
    motion_correction,
    select_2d,
    template_picker,
)
from .base import DataKind, InputSlot, JobParams, JobType, OutputGroup

__all__ = [
    "DataKind",
    "InputSlot",
    "JobParams",
    "JobType",
    "OutputGroup",
    "UnknownJobTypeError",
    "all",
    "get",
    "validate_params",
]

_CATALOG: dict[str, JobType] = {
    module.JOB.name: module.JOB
    for module in (
        import_movies,
        import_micrographs,
        import_particles,
        import_volume,
        motion_correction,
        ctf_estimation,
        blob_picker,
        template_picker,
        extract_particles,
        classify_2d,
        select_2d,
        ab_initio,
        homogeneous_refinement,
        export,
    )
}


class UnknownJobTypeError(ValueError):
    """``job_type`` names no job in the catalog."""


def get(job_type: str) -> JobType:
    """Return the catalog entry of ``job_type``.

    Raises
    ------
    UnknownJobTypeError
        (a ``ValueError``) naming ``job_type`` and listing the known types.
    """
    try:
        return _CATALOG[job_type]
    except KeyError:
        known = ", ".join(_CATALOG)
        raise UnknownJobTypeError(
            f"job_type {job_type!r} is not in the catalog (known: {known})"
        ) from None


def all() -> tuple[JobType, ...]:
    """Return every job type, in pipeline order."""
    return tuple(_CATALOG.values())


def validate_params(job_type: str, params: Mapping[str, Any] | None) -> JobParams:
    """Validate ``params`` against the parameter model of ``job_type``.

    Parameters
    ----------
    job_type : str
        A catalog name (``"motion_correction"``).
    params : mapping or None
        The user's ``spec.params``; ``None`` means all defaults.

    Returns
    -------
    JobParams
        The validated, immutable parameters with defaults filled in.

    Raises
    ------
    UnknownJobTypeError
        If ``job_type`` is not in the catalog.
    pydantic.ValidationError
        If a parameter is unknown, has the wrong type or is out of bounds; each error's
        ``loc`` names the field.
    """
    return get(job_type).params.model_validate(dict(params or {}))
