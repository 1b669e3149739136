"""Waiting on conditions, never on time (STYLE 13)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str, timeout_s: float = 60.0,
                poll_s: float = 0.05) -> None:
    """Poll `condition` until it holds; fail naming `what` and the bound if it does not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout_s:.0f} s for {what}, in vain")
        await asyncio.sleep(poll_s)


async def watermark(client, url: str | None = None) -> int:
    """W as the first answering replica (or `url`) reports it; -1 if none answers."""
    for target in [url] if url else client.members:
        health = await client.health(target)
        if health is not None:
            return health["watermark"]
    return -1


async def last_epoch(client) -> int:
    """The longest log any replica reports."""
    epochs = [h["last_epoch"] for u in client.members if (h := await client.health(u)) is not None]
    return max(epochs, default=-1)


async def at_least(value: Awaitable[int], threshold: int) -> bool:
    return await value >= threshold
