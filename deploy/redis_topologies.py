"""A Redis Cluster and a Sentinel deployment on loopback, from the same server binary, for the tests.

:class:`LocalCluster` is three primaries sharing the 16384 hash slots; :class:`LocalSentinel` is a
primary, its replica and three sentinels (quorum 2) that fail over within seconds. Every process
runs on a free loopback port with the parent death signal, so none outlives the test run, and
every start returns only once the deployment answers as a client would use it (polled, with a
deadline). Nothing here is for production: there, use a maintained chart or operator.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import redis

from deploy.processes import free_port
from deploy.redis_server import RedisServer

CLUSTER_SLOTS = 16384


def _admin(port: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=port, password=password, decode_responses=True, socket_timeout=2.0
    )


def _info(port: int, section: str, password: str | None = None) -> dict[str, Any]:
    with _admin(port, password) as client:
        return dict(client.info(section))


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` after ``timeout`` seconds.

    A condition that raises a Redis error counts as not yet: servers refuse or reset
    connections while they start or change roles.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


class _Deployment:
    servers: list[RedisServer]

    def start(self, timeout: float = 30.0) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process (each gets SIGTERM, then SIGKILL after 5 s)."""
        for server in self.servers:
            server.stop()

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class LocalCluster(_Deployment):
    """A Redis Cluster of ``primaries`` nodes without replicas, the slots split evenly between them."""

    def __init__(self, data_dir: Path, *, primaries: int = 3):
        # The bus port defaults to port + 10000, which a free port above 55535 cannot have.
        self.bus_ports = [free_port() for _ in range(primaries)]
        self.servers = [
            RedisServer(
                data_dir / f"node-{number}",
                extra_args=[
                    *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                    *("--cluster-port", str(bus_port)),
                ],
            )
            for number, bus_port in enumerate(self.bus_ports)
        ]

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    @property
    def url(self) -> str:
        """The ``REDIS_URL`` for auth: every node as a starting point."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def slot_ranges(self) -> list[tuple[int, int]]:
        """The first and last slot each node serves, in the order of :attr:`servers`."""
        share = CLUSTER_SLOTS // len(self.servers)
        bounds = [share * number for number in range(len(self.servers))] + [CLUSTER_SLOTS]
        return [(bounds[number], bounds[number + 1] - 1) for number in range(len(self.servers))]

    def port_for_key(self, key: str) -> int:
        """The port of the node that holds ``key``, by the slot the cluster computes for it."""
        with _admin(self.ports[0]) as client:
            slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        for port, (first, last) in zip(self.ports, self.slot_ranges(), strict=True):
            if first <= slot <= last:
                return port
        raise AssertionError(f"slot {slot} is served by no node")

    def start(self, timeout: float = 30.0) -> None:
        """Start the nodes, introduce them (``CLUSTER MEET``), hand out the slots, wait for ``ok``."""
        for server in self.servers:
            server.start()
        with _admin(self.ports[0]) as client:
            for port, bus_port in zip(self.ports[1:], self.bus_ports[1:], strict=True):
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus_port)
        for port, (low, high) in zip(self.ports, self.slot_ranges(), strict=True):
            with _admin(port) as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", low, high)
        for port in self.ports:
            wait_until(partial(self._sees_a_whole_cluster, port), timeout, f"cluster node {port}")

    def _sees_a_whole_cluster(self, port: int) -> bool:
        with _admin(port) as client:
            info = client.execute_command("CLUSTER", "INFO")
        text = info if isinstance(info, str) else str(info)
        fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
        return (
            fields.get("cluster_state") == "ok"
            and fields.get("cluster_known_nodes") == str(len(self.servers))
            and fields.get("cluster_slots_ok") == str(CLUSTER_SLOTS)
        )

    def flush(self) -> None:
        """Empty every node."""
        for port in self.ports:
            with _admin(port) as client:
                client.flushall()


class LocalSentinel(_Deployment):
    """A primary, one replica and three sentinels with quorum 2, tuned to fail over in seconds.

    ``down_after`` (ms without an answer before a sentinel calls the primary down) and
    ``failover_timeout`` (ms) are low so a test sees a whole failover quickly. With
    ``password``, every server and every sentinel requires it, as the common Helm charts set
    them up (one password for the data servers and the sentinels).
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        service: str = "sessions",
        sentinels: int = 3,
        down_after: int = 1000,
        failover_timeout: int = 5000,
        password: str | None = None,
    ):
        self.service = service
        self.password = password
        self.down_after = down_after
        self.failover_timeout = failover_timeout
        # A primary waits 5 s for more replicas before a diskless full sync unless told not to;
        # both get the setting, as either may be the primary after a failover.
        no_delay = ["--repl-diskless-sync-delay", "0"]
        if password is not None:
            no_delay += ["--requirepass", password, "--masterauth", password]
        self.primary = RedisServer(data_dir / "primary", extra_args=no_delay)
        self.replica = RedisServer(
            data_dir / "replica", extra_args=[*no_delay, "--replicaof", "127.0.0.1", str(self.primary.port)]
        )
        self.sentinels = [
            RedisServer(
                data_dir / f"sentinel-{number}",
                config=data_dir / f"sentinel-{number}" / "sentinel.conf",
                extra_args=["--sentinel"],
            )
            for number in range(sentinels)
        ]
        self.servers = [*self.sentinels, self.replica, self.primary]

    @property
    def url(self) -> str:
        """The ``REDIS_URL`` for auth: the sentinels and the service they watch."""
        addresses = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        credentials = "" if self.password is None else f":{quote(self.password, safe='')}@"
        return f"redis+sentinel://{credentials}{addresses}/{self.service}"

    @property
    def data_servers(self) -> list[RedisServer]:
        return [self.primary, self.replica]

    def start(self, timeout: float = 30.0) -> None:
        """Start the data servers, then the sentinels; return once every sentinel sees everyone."""
        self.primary.start()
        self.replica.start()
        wait_until(self._replica_linked, timeout, "replication link")
        quorum = len(self.sentinels) // 2 + 1
        ids = [secrets.token_hex(20) for _ in self.sentinels]
        for sentinel, own_id in zip(self.sentinels, ids, strict=True):
            assert sentinel.config is not None
            sentinel.data_dir.mkdir(parents=True, exist_ok=True)
            # Sentinels find each other by hello messages every 2 s; naming the peers (and the
            # replica) up front, as a sentinel's own rewritten file would, saves those seconds.
            peers = [
                f"sentinel known-sentinel {self.service} 127.0.0.1 {peer.port} {peer_id}\n"
                for peer, peer_id in zip(self.sentinels, ids, strict=True)
                if peer is not sentinel
            ]
            sentinel.config.write_text(
                f"sentinel myid {own_id}\n"
                f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} {quorum}\n"
                f"sentinel down-after-milliseconds {self.service} {self.down_after}\n"
                f"sentinel failover-timeout {self.service} {self.failover_timeout}\n"
                f"sentinel known-replica {self.service} 127.0.0.1 {self.replica.port}\n"
                + "".join(peers)
                + (
                    ""
                    if self.password is None
                    else f"sentinel auth-pass {self.service} {self.password}\nrequirepass {self.password}\n"
                )
            )
            sentinel.start()
        for sentinel in self.sentinels:
            wait_until(
                partial(self._sentinel_sees_everyone, sentinel.port),
                timeout,
                f"sentinel {sentinel.port} seeing its peers and the replica",
            )

    def _replica_linked(self) -> bool:
        return _info(self.replica.port, "replication", self.password).get("master_link_status") == "up"

    def _sentinel_sees_everyone(self, port: int) -> bool:
        with _admin(port, self.password) as client:
            state = client.sentinel_master(self.service)
        return (
            int(state["num-other-sentinels"]) == len(self.sentinels) - 1
            and int(state["num-slaves"]) == 1
            and state["ip"] == "127.0.0.1"
        )

    def primary_port(self) -> int:
        """The port every sentinel names as the primary now (AssertionError if they disagree)."""
        named = self._named_primaries()
        assert len(named) == 1, f"the sentinels disagree on the primary: {sorted(named)}"
        return named.pop()

    def _named_primaries(self) -> set[int]:
        named = set()
        for sentinel in self.sentinels:
            with _admin(sentinel.port, self.password) as client:
                _, port = client.sentinel_get_master_addr_by_name(self.service)
            named.add(int(port))
        return named

    def names_primary(self, port: int) -> bool:
        """Whether every sentinel names the server on ``port`` as the primary now."""
        try:
            return self._named_primaries() == {port}
        except redis.RedisError:
            return False

    def wait_for_replica_to_catch_up(self, timeout: float = 10.0) -> None:
        """Return once the replica has applied every write the primary had taken when called."""
        primary, replica = self.primary_port(), self.other_data_port()
        target = int(_info(primary, "replication", self.password)["master_repl_offset"])
        wait_until(
            lambda: int(_info(replica, "replication", self.password).get("slave_repl_offset", -1)) >= target,
            timeout,
            f"replica {replica} reaching offset {target}",
        )

    def other_data_port(self) -> int:
        """The data server that is not the primary now."""
        primary = self.primary_port()
        return next(server.port for server in self.data_servers if server.port != primary)

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote the replica now, without waiting for the primary to fail."""
        with _admin(self.sentinels[0].port, self.password) as client:
            client.sentinel_failover(self.service)
