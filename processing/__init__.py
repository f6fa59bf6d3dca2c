"""CryoKube data plane: array backend, file formats, datasets, algorithms, simulator, job catalog
and the worker entry point. Never imports :mod:`cryokube.operator`."""
