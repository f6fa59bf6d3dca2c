"""CryoKube metadata service: jobs, events, outputs and exposures over HTTP, backed by MongoDB.

Layers (one direction): :mod:`.routes` (route table) -> :mod:`.views` (pydantic in and out) ->
:mod:`.services` (rules, no aiohttp) -> :mod:`.repositories` (the only code importing pymongo).
Build the application with :func:`cryokube.operator.metadata.app.create_app`; the worker-side
RPC contract is plain HTTP + JSON, described in ``docs/metadata.md``.
"""
