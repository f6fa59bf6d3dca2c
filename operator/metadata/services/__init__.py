"""Services: the rules of the metadata service (who may do what, job state machine, idempotency).

Services take an :class:`~.access.Identity` or job claims plus validated models, call
repositories, and raise domain exceptions from :mod:`..errors`; they never import aiohttp.
"""
