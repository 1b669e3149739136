"""The leader's drain loop never dies on one item (in-process, no Raft started)."""

from __future__ import annotations

import asyncio

import pytest

from sequencer import limits, wire
from sequencer.config import ClusterConfig
from sequencer.cluster import write_embedded_config
from sequencer.errors import TooLarge
from sequencer.node import SequencerNode, Submission
from sequencer.types import CreateTransfer

SMALLEST_EPOCH = limits.request_bytes_max(wire.BATCH_EVENTS_MAX) + limits.EPOCH_FRAME_BYTES_MAX


async def test_a_bad_item_fails_alone_and_the_loop_goes_on(tmp_path) -> None:
    config = ClusterConfig.load(write_embedded_config(tmp_path, log={"epoch_bytes_max": SMALLEST_EPOCH}))
    node = SequencerNode(config, 1)  # not started: proposing fails, which must not stop the loop either
    drain = asyncio.create_task(node.drain())
    try:
        transfer = CreateTransfer(1, 2, 3, 4, 1, 1)
        oversized = Submission([transfer], size_bytes=SMALLEST_EPOCH * 2)
        normal = Submission([transfer], size_bytes=100)
        node.queue.put_nowait(oversized)
        node.queue.put_nowait(normal)
        with pytest.raises(TooLarge, match="split it"):
            await asyncio.wait_for(oversized.done, 5)
        with pytest.raises(Exception):  # no Raft log: the proposal fails, and says why
            await asyncio.wait_for(normal.done, 5)
        assert not drain.done(), "the drain loop died"
        later = Submission([transfer], size_bytes=100)
        node.queue.put_nowait(later)
        with pytest.raises(Exception):
            await asyncio.wait_for(later.done, 5)
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
                for i in range(wire.BATCH_EVENTS_MAX + 40)]
        with pytest.raises(TooLarge, match="split it into smaller batches"):
            node.submit(huge)
        assert node.queue.empty()
        node.submit(huge[: wire.BATCH_EVENTS_MAX])  # the largest valid request fits
        assert node.queue.qsize() == 1
    finally:
        node.journal.close()
