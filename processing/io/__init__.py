"""File formats: MRC maps and stacks, movies (TIFF, MRC, EER), gain and defect correction.

Readers stream or memory-map and raise the typed errors of
:mod:`cryokube.processing.io.errors`; writers are atomic.
"""
