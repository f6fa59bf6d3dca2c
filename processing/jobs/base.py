"""Building blocks of the job catalog: parameter models, input slots and output groups.

A job type is declared once, as a :class:`JobType`, in its own module of
:mod:`cryokube.processing.jobs`. The declaration is the single source of truth for every
consumer: the operator validates a Job resource's ``spec.params`` against
:attr:`JobType.params`, checks ``spec.inputs`` against :attr:`JobType.inputs`, and the CLI and
console render forms from the same pydantic JSON schema.

Parameter names follow cryoSPARC's where cryoSPARC has one (``res_max_align``,
``df_search_min``, ``box_size_pix`` ...), so users can carry their settings over; every field
states its unit in ``json_schema_extra["unit"]`` and in its description.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class DataKind(StrEnum):
    """The kinds of dataset that flow between jobs (an input slot accepts one kind)."""

    MOVIES = "movies"
    MICROGRAPHS = "micrographs"
    PARTICLES = "particles"
    VOLUME = "volume"
    MASK = "mask"
    TEMPLATES = "templates"


class JobParams(BaseModel):
    """Base of every parameter model: unknown fields are errors and models are immutable.

    ``extra="forbid"`` makes a misspelt parameter (``res_max_algin``) a validation error
    naming the field instead of a silently ignored key.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def param(
    default: Any,
    *,
    description: str,
    unit: str = "",
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
) -> Any:
    """Declare one job parameter with its description, unit and bounds.

    Parameters
    ----------
    default : object
        Default value (cryoSPARC's default where it has one).
    description : str
        One sentence for ``kubectl explain``, the CLI help and the console form.
    unit : str, optional
        Physical unit (``"A"``, ``"px"``, ``"e/A^2"``, ``"deg"``, ``"kV"``, ``"mm"``) or ``""``
        for a dimensionless or count parameter.
    ge, le, gt, lt : float, optional
        Inclusive lower and upper bounds, exclusive lower and upper bounds.

    Returns
    -------
    pydantic.fields.FieldInfo
        The field declaration (typed ``Any`` so that it can be assigned to any annotation).
    """
    text = f"{description} ({unit})" if unit else description
    return Field(
        default,
        description=text,
        ge=ge,
        le=le,
        gt=gt,
        lt=lt,
        json_schema_extra={"unit": unit},
    )


@dataclass(frozen=True)
class InputSlot:
    """A typed input of a job type, filled by ``spec.inputs: [{job, output}]``.

    Attributes
    ----------
    name : str
        Slot name (``"micrographs"``).
    kind : DataKind
        The kind of dataset the slot accepts; it must match the upstream output group's kind.
    description : str
        What the job uses the input for.
    required : bool
        Whether the job cannot run without it.
    multiple : bool
        Whether several upstream outputs may be connected (they are concatenated).
    """

    name: str
    kind: DataKind
    description: str
    required: bool = True
    multiple: bool = False


@dataclass(frozen=True)
class OutputGroup:
    """A named dataset a job writes into its folder, for downstream ``inputs`` to reference.

    Attributes
    ----------
    name : str
        Group name (``"micrographs"``, ``"particles_selected"``).
    kind : DataKind
        The kind of dataset.
    description : str
        What the group holds.
    """

    name: str
    kind: DataKind
    description: str


@dataclass(frozen=True)
class JobType:
    """One entry of the job catalog.

    Attributes
    ----------
    name : str
        The ``spec.type`` users write (``"ctf_estimation"``).
    title : str
        Human-readable title for the console.
    description : str
        One paragraph: what the job does and which method it follows.
    params : type[JobParams]
        The pydantic model that validates ``spec.params``.
    inputs : tuple of InputSlot
        Typed inputs, in display order.
    outputs : tuple of OutputGroup
        Output groups, in display order.
    uses_gpu : bool
        Whether the job benefits from a GPU (the default ``resources.gpus`` is 1, else 0).
    shardable : bool
        Whether ``spec.shards > 1`` is meaningful (per-exposure pre-processing).
    run : callable or None
        The worker entry point ``run(ctx)``. The worker runtime (issue 6) fills it in; ``None``
        means the catalog declares the job but no worker implements it yet.
    """

    name: str
    title: str
    description: str
    params: type[JobParams]
    inputs: tuple[InputSlot, ...]
    outputs: tuple[OutputGroup, ...]
    uses_gpu: bool = False
    shardable: bool = False
    run: Callable[..., Any] | None = None

    def input_slot(self, name: str) -> InputSlot:
        """Return the input slot called ``name``; raise ``ValueError`` naming it if absent."""
        for slot in self.inputs:
            if slot.name == name:
                return slot
        known = ", ".join(s.name for s in self.inputs) or "none"
        raise ValueError(f"job type {self.name!r} has no input slot {name!r} (slots: {known})")

    def output_group(self, name: str) -> OutputGroup:
        """Return the output group called ``name``; raise ``ValueError`` naming it if absent."""
        for group in self.outputs:
            if group.name == name:
                return group
        known = ", ".join(g.name for g in self.outputs) or "none"
        raise ValueError(f"job type {self.name!r} has no output {name!r} (outputs: {known})")


class JobInputError(ValueError):
    """An input is missing, unfinished, of the wrong kind, or unreadable: a permanent error.

    Raised by the worker runtime and by job ``run`` functions; the worker exits with code 2 so
    that the Job fails at once instead of retrying.
    """
