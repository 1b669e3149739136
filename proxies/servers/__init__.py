"""Real servers on loopback for tests and `ordo up`: PostgreSQL and Cassandra.

Owned here: the one place that installs, starts, stops and restarts the real
stores, each on free ports in a temporary directory.  Callers: the pytest
fixtures (`proxies.servers.pytest_fixtures`), `python -m proxies.servers up`
(which `ordo up` runs), and fault tests that take a store down and bring it
back.  The first run on a machine installs what is missing (Debian's
postgresql, JDK 17, Maven, the Cassandra jars) and says so on stderr.

    from proxies.servers import PostgresServer, CassandraServer
    with PostgresServer.start() as pg, CassandraServer.start() as cs:
        pg.create_database("ledger"); pg.dsn("ledger")
        cs.host, cs.port
"""

from proxies.servers.cassandra import CassandraServer
from proxies.servers.postgres import PostgresServer
from proxies.servers.process import InstallError, ServerStartError

__all__ = ["CassandraServer", "InstallError", "PostgresServer", "ServerStartError"]
