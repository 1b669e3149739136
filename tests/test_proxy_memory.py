"""The ShardProxy contract on the dict model itself.

The memory shard is the oracle the other stores are compared with, so the
contract's absolute checks (the scenario's expected balances, results and
pagination) are what keep the oracle honest.
"""

from __future__ import annotations

import pytest

from proxies.memory import MemoryShard
from tests.proxy_contract import ContractTests


class TestMemoryContract(ContractTests):
    @pytest.fixture
    async def shard_factory(self):
        async def make(name: str) -> MemoryShard:
            shard = MemoryShard(name)
            await shard.open()
            return shard

        return make
