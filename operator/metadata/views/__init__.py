"""Views: parse and validate requests with pydantic, call a service, serialize the answer.

Each view is declared with :func:`~.base.endpoint`, whose :class:`~.base.Spec` (auth kind, body,
query and response models) both drives the parsing and generates the OpenAPI document.
"""
