"""Fan-out of new job events to server-sent-event subscribers.

One background task (:meth:`EventHub.run`) reads the events collection's change feed and wakes
the subscribers of the event's job; subscribers then read the events after their last ``seq``
from the repository, so a missed wake-up costs latency, never an event.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from ..repositories.changefeed import ChangeFeed, FeedStateRepository

FEED_NAME = "events"
SAVE_EVERY = 100
"""Persist the resume token every this many changes (and at shutdown)."""


class EventHub:
    """Per-job wake-ups driven by a change feed."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    def subscribe(self, job: str) -> asyncio.Event:
        """A flag set whenever ``job`` gets a new event; pass it to :meth:`unsubscribe`."""
        flag = asyncio.Event()
        self._waiters[job].add(flag)
        return flag

    def unsubscribe(self, job: str, flag: asyncio.Event) -> None:
        """Stop waking ``flag``."""
        waiters = self._waiters.get(job)
        if waiters is not None:
            waiters.discard(flag)
            if not waiters:
                del self._waiters[job]

    def notify(self, job: str) -> None:
        """Wake every subscriber of ``job``."""
        for flag in self._waiters.get(job, ()):
            flag.set()

    async def run(self, feed: ChangeFeed, state: FeedStateRepository) -> None:
        """Follow ``feed`` forever from the persisted token, waking subscribers per change."""
        token = await state.load(FEED_NAME)
        seen = 0
        try:
            async for change in feed.changes(token):
                token = change.token
                self.notify(str(change.document.get("job", "")))
                seen += 1
                if seen % SAVE_EVERY == 0:
                    await state.save(FEED_NAME, token)
        finally:
            if token is not None:
                await asyncio.shield(state.save(FEED_NAME, token))
