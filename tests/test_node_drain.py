"""The leader's drain loop (the driver of SequencerCore) never dies on one item; in-process, no Raft."""

from __future__ import annotations

import asyncio

import pytest

from sequencer import limits
from sequencer.tools.cluster import write_embedded_config
from sequencer.config import ClusterConfig
from sequencer.core import _Queued
from sequencer.errors import NotLeaderError, TooLarge
from sequencer.node import SequencerNode
from sequencer.types import CreateTransfer

SMALLEST_EPOCH = limits.request_bytes_max(limits.BATCH_EVENTS_MAX) + limits.EPOCH_FRAME_BYTES_MAX


async def test_a_bad_item_fails_alone_and_the_loop_goes_on(tmp_path) -> None:
    config = ClusterConfig.load(write_embedded_config(tmp_path, log={"epoch_bytes_max": SMALLEST_EPOCH}))
    node = SequencerNode(config, 1)  # not started: this replica may not stamp, which must not stop the loop
    node.require_leader = lambda: None
    drain = asyncio.create_task(node.drain())
    try:
        transfer = CreateTransfer(1, 2, 3, 4, 1, 1)
        # An item past the epoch budget, slipped past submit's check: it fails alone.
        node.core._queue.append(_Queued(999, [transfer], SMALLEST_EPOCH * 2))
        oversized = node._waiting[999] = asyncio.get_running_loop().create_future()
        normal = node.submit([transfer])
        with pytest.raises(TooLarge, match="split it"):
            await asyncio.wait_for(oversized, 5)
        with pytest.raises(NotLeaderError):
            await asyncio.wait_for(normal, 5)
        assert not drain.done(), "the drain loop died"
        with pytest.raises(NotLeaderError):
            await asyncio.wait_for(node.submit([transfer]), 5)
        assert not drain.done()
    finally:
        drain.cancel()
        node.journal.close()


async def test_submit_refuses_what_can_never_fit(tmp_path) -> None:
    config = ClusterConfig.load(write_embedded_config(tmp_path, log={"epoch_bytes_max": SMALLEST_EPOCH}))
    node = SequencerNode(config, 1)
    node.require_leader = lambda: None  # the size check comes after routing; no Raft here
    try:
        huge = [CreateTransfer(2**63 - 2 - i, 2**62 + i, 2**62 - i, 2**62, 2**32 - 1, 2**16 - 1, 2, 2**62, 10**9, 2**62)
                for i in range(limits.BATCH_EVENTS_MAX + 40)]
        with pytest.raises(TooLarge, match="split it into smaller batches"):
            node.submit(huge)
        assert node.core.queue_depth == 0
        node.submit(huge[: limits.BATCH_EVENTS_MAX])  # the largest valid request fits
        assert node.core.queue_depth == 1
    finally:
        node.journal.close()


def test_readiness_reasons() -> None:
    from sequencer.node import not_ready_reasons

    assert not_ready_reasons("http://a", None, 10, 10, 60_000) == []
    assert not_ready_reasons("http://a", None, 12, 10, limits.READY_W_STALL_MS - 1) == []  # catching up
    stalled = not_ready_reasons("http://a", None, 12, 10, limits.READY_W_STALL_MS)
    assert len(stalled) == 1 and "2 epochs behind" in stalled[0]
    everything = not_ready_reasons(None, "OperationalError: down", 12, 10, 10**6)
    assert [r.split(" ")[0] for r in everything] == ["no", "a", "W=10"]
