"""Metadata of exposures and particles: one columnar :class:`Dataset` in cryoSPARC's ``.cs``
layout, ``.cs`` file I/O, and RELION STAR import and export."""

from cryokube.processing.datasets.cs import DatasetFileError, load_cs, save_cs
from cryokube.processing.datasets.dataset import Dataset, concatenate, random_uids
from cryokube.processing.datasets.star import (
    dataset_from_star,
    read_star,
    save_star,
    star_blocks_from_dataset,
)

__all__ = [
    "Dataset",
    "DatasetFileError",
    "concatenate",
    "dataset_from_star",
    "load_cs",
    "random_uids",
    "read_star",
    "save_cs",
    "save_star",
    "star_blocks_from_dataset",
]
