"""Users and their API tokens.

Users are recorded as the auth proxy presents them (``_id`` is the user name). API tokens are
stored only as their SHA-256 digest (``_id``), so a leaked database does not leak tokens.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from .base import Index, Store, now_ms, to_ms


class UserRepository:
    """The ``users`` collection: who has used the service, with their latest groups."""

    collection: ClassVar[str] = "users"
    indexes: ClassVar[tuple[Index, ...]] = (Index("email", [("email", 1)]),)

    def __init__(self, store: Store) -> None:
        self._store = store
        self._col = store.collection(self.collection)

    async def record(self, *, name: str, email: str | None, groups: list[str]) -> None:
        """Upsert the user with the identity the proxy sent, stamped ``last_seen_ms``."""
        changes = {"email": email, "groups": groups, "last_seen_ms": now_ms()}
        await self._store.run(
            lambda: self._col.update_one({"_id": name}, {"$set": changes}, upsert=True)
        )

    async def groups(self, name: str) -> list[str] | None:
        """The groups last recorded for ``name``, or None for an unknown user."""
        doc = await self._store.run(lambda: self._col.find_one({"_id": name}, {"groups": 1}))
        return None if doc is None else list(doc["groups"])


class ApiTokenRepository:
    """The ``api_tokens`` collection: digests of user API tokens with owner and expiry."""

    collection: ClassVar[str] = "api_tokens"
    indexes: ClassVar[tuple[Index, ...]] = (Index("user", [("user", 1)]),)

    def __init__(self, store: Store) -> None:
        self._store = store
        self._col = store.collection(self.collection)

    async def add(self, *, digest: str, user: str, expires_at: datetime) -> None:
        """Store a new token's digest for ``user``."""
        doc = {
            "_id": digest,
            "user": user,
            "created_at_ms": now_ms(),
            "expires_at_ms": to_ms(expires_at),
        }
        await self._store.run(lambda: self._col.insert_one(doc))

    async def owner(self, digest: str) -> str | None:
        """The user of an unexpired token with this digest, or None."""
        query = {"_id": digest, "expires_at_ms": {"$gt": now_ms()}}
        doc = await self._store.run(lambda: self._col.find_one(query, {"user": 1}))
        return None if doc is None else str(doc["user"])
