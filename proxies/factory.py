"""Building a ShardProxy from a directory `ShardSpec`.

Role: driver wiring (a ShardSpec to its proxy).

Owned here: the only place that maps a store name to its proxy class, with
the imports deferred so that the embedded default never loads psycopg or the
Cassandra driver.  Callers: the API node, the executor and the verifier.
"""

from __future__ import annotations

from proxies.base import ShardProxy
from proxies.directory import ShardSpec
from sequencer.errors import ConfigError


def make_shard(spec: ShardSpec) -> ShardProxy:
    options = dict(spec.options)
    try:
        if spec.store == "sqlite":
            from proxies.sqlite import SqliteShard

            return SqliteShard(spec.name, options["path"])
        if spec.store == "postgres":
            from proxies.postgres import PostgresShard

            return PostgresShard(spec.name, options["dsn"], schema=options.get("schema"))
        if spec.store == "cassandra":
            from proxies.cassandra import CassandraShard

            return CassandraShard(spec.name, **options)
        if spec.store == "memory":
            from proxies.memory import MemoryShard

            return MemoryShard(spec.name)
    except KeyError as exc:
        raise ConfigError(f"shard {spec.name!r} ({spec.store}) is missing option {exc}") from None
    raise ConfigError(f"shard {spec.name!r}: unknown store {spec.store!r}")
