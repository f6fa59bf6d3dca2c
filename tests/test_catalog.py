"""The job catalog: every type is registered, documented, bounded and validates input."""

from __future__ import annotations

import pytest
from cryokube.processing import jobs
from cryokube.processing.jobs import DataKind
from pydantic import ValidationError

EXPECTED = [
    "import_movies",
    "import_micrographs",
    "import_particles",
    "import_volume",
    "motion_correction",
    "ctf_estimation",
    "blob_picker",
    "template_picker",
    "extract_particles",
    "classify_2d",
    "select_2d",
    "ab_initio",
    "homogeneous_refinement",
    "export",
]


def test_all_types_registered_in_pipeline_order() -> None:
    assert [job.name for job in jobs.all()] == EXPECTED


@pytest.mark.parametrize("job_type", EXPECTED)
def test_every_param_has_description_unit_and_default(job_type: str) -> None:
    entry = jobs.get(job_type)
    assert entry.description
    for name, field in entry.params.model_fields.items():
        assert field.description, f"{job_type}.{name} has no description"
        assert isinstance(field.json_schema_extra, dict), f"{job_type}.{name} has no unit key"
        assert "unit" in field.json_schema_extra
        assert not field.is_required(), f"{job_type}.{name} has no default"
    entry.params()  # the defaults themselves validate


@pytest.mark.parametrize("job_type", EXPECTED)
def test_names_with_lengths_carry_a_unit(job_type: str) -> None:
    for name, field in jobs.get(job_type).params.model_fields.items():
        if name.endswith(("_A", "_pix", "_deg", "_kv", "_mm", "_e_per_A2")):
            assert isinstance(field.json_schema_extra, dict)
            assert field.json_schema_extra["unit"], f"{job_type}.{name} names a unit but has none"


def test_unknown_type_names_the_argument() -> None:
    with pytest.raises(jobs.UnknownJobTypeError, match="job_type 'ctf'"):
        jobs.get("ctf")


@pytest.mark.parametrize(
    ("job_type", "params", "field"),
    [
        ("ctf_estimation", {"res_max_align": -4}, "res_max_align"),
        ("ctf_estimation", {"res_max_algin": 4}, "res_max_algin"),
        ("ctf_estimation", {"res_min_align": 3, "res_max_align": 4}, "res_max_align"),
        ("motion_correction", {"frame_start": 5, "frame_end": 3}, "frame_end"),
        ("blob_picker", {"diameter_min_A": 200, "diameter_max_A": 100}, "diameter_max_A"),
        ("extract_particles", {"box_size_pix": 255}, "box_size_pix"),
        ("extract_particles", {"box_size_pix": 128, "bin_size_pix": 256}, "bin_size_pix"),
        ("import_movies", {"psize_A": 0}, "psize_A"),
        ("classify_2d", {"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_params_name_the_field(job_type: str, params: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        jobs.validate_params(job_type, params)


def test_valid_params_fill_defaults() -> None:
    params = jobs.validate_params("ctf_estimation", {"amp_contrast": 0.07, "res_max_align": 4})
    assert params.model_dump()["df_search_max"] == 40000.0


def test_inputs_are_fed_by_some_upstream_output() -> None:
    produced = {group.kind for job in jobs.all() for group in job.outputs}
    for job in jobs.all():
        for slot in job.inputs:
            assert slot.kind in produced, f"{job.name}.{slot.name}: nothing produces {slot.kind}"
    assert DataKind.MASK in produced


def test_slot_and_output_lookups_name_what_is_missing() -> None:
    ctf = jobs.get("ctf_estimation")
    assert ctf.input_slot("micrographs").kind is DataKind.MICROGRAPHS
    with pytest.raises(ValueError, match="no output 'particles'"):
        ctf.output_group("particles")
    with pytest.raises(ValueError, match="no input slot 'volume'"):
        ctf.input_slot("volume")
