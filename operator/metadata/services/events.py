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
"""Persist the resume token every this many changes. Not at shutdown: a cancelled task must not
wait on MongoDB, and subscribers re-read events by ``seq``, so a replayed change only costs a
spurious wake-up."""


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

    async def run(
        self, feed: ChangeFeed, state: FeedStateRepository, *, stop: asyncio.Event
    ) -> None:
        """Follow ``feed`` from the persisted token until ``stop``, waking subscribers."""
        token = await state.load(FEED_NAME)
        seen = 0
        async for change in feed.changes(token, stop=stop):
            self.notify(str(change.document.get("job", "")))
            seen += 1
            if seen % SAVE_EVERY == 0:
                await state.save(FEED_NAME, change.token)
