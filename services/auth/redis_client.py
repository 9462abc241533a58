"""Auth's Redis client for one server, a Sentinel-watched primary or a Cluster, chosen by ``REDIS_URL``.

* ``redis://``, ``rediss://``, ``unix://``: one server, in redis-py's own URL syntax.
* ``redis+sentinel://[user:password@]host:port[,host:port...]/<service>[/db]``: the primary that
  the sentinels name for ``<service>``, found again after a failover. The credentials are
  given to the sentinels and the primary alike.
* ``redis+cluster://[user:password@]host:port[,host:port...]``: a Redis Cluster; the nodes listed
  are only where the client starts to learn the cluster's layout.

Whatever the topology, a request fails within about two timeouts when Redis is away or hung, and
the next request after Redis is back succeeds: nothing needs a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias
from urllib.parse import unquote, urlsplit

import redis.asyncio as redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.connection import parse_url as parse_single_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, RedisClusterException, RedisError
from redis.typing import EncodableT

from services.auth.redis_link import Address, Link, pack

logger = logging.getLogger(__name__)

Client: TypeAlias = redis.Redis | RedisCluster

# How stale auth's idea of the Sentinel primary may get when no connection fails to tell it.
PRIMARY_CHECK_SECONDS = 1.0

# What a failing Redis raises. The Cluster client raises RedisClusterException, which is not a
# RedisError, when it cannot reach any node to learn the layout.
REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, RedisClusterException)

SINGLE_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"

_HOST_PORT = re.compile(r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]/]+)):(?P<port>[0-9]{1,5})$")


@dataclass(frozen=True)
class Topology:
    """Where Redis is, parsed from ``REDIS_URL``; the password never shows in a repr."""

    kind: Literal["single", "sentinel", "cluster"]
    nodes: tuple[tuple[str, int], ...] = ()
    service: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def parse_url(url: str) -> Topology:
    """The topology ``url`` names; ValueError, whose text never repeats the URL, if it is malformed."""
    scheme, separator, _ = url.partition("://")
    if not separator:
        raise ValueError(f"must start with one of {_schemes()}")
    scheme = scheme.lower()
    if scheme in SINGLE_SCHEMES:
        try:
            parse_single_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        except ValueError as exc:
            raise ValueError(f"is not a valid {scheme}:// URL ({_without(exc, url)})") from None
        return Topology("single")
    if scheme not in (SENTINEL_SCHEME, CLUSTER_SCHEME):
        raise ValueError(f"has an unknown scheme {scheme!r}; use one of {_schemes()}")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(f"is not a valid {scheme}:// URL") from None
    if parts.query or parts.fragment:
        raise ValueError(f"{scheme}:// takes no query string or fragment")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, password = _credentials(userinfo)
    nodes = _nodes(hosts, scheme)
    path = [segment for segment in parts.path.split("/") if segment]
    if scheme == CLUSTER_SCHEME:
        if path not in ([], ["0"]):
            raise ValueError("redis+cluster:// takes no path: a Cluster has database 0 only")
        return Topology("cluster", nodes, username=username, password=password)
    if not 1 <= len(path) <= 2:
        raise ValueError("redis+sentinel:// needs the service name as its path: .../<service>[/db]")
    db = path[1] if len(path) == 2 else "0"
    if not db.isdigit():
        raise ValueError("redis+sentinel:// takes a database number after the service name")
    return Topology(
        "sentinel", nodes, service=unquote(path[0]), db=int(db), username=username, password=password
    )


def connect(url: str, timeout: float, *, max_connections: int = 100) -> Client:
    """A client for the topology ``url`` names that fails within about ``2 * timeout``, never hangs.

    One quick retry heals a pooled connection that died with a Redis restart or a failover: a
    Sentinel-managed connection asks the sentinels for the primary again, and a Cluster client
    reloads the cluster's layout. On one server or a Sentinel primary a timeout is not retried,
    so a hung server costs one socket timeout; the Cluster client retries timeouts too, so a
    hung node costs two. A burst of more concurrent commands than ``max_connections`` waits up
    to ``timeout`` for a free connection rather than failing.
    """
    topology = parse_url(url)
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
    }
    if topology.kind == "cluster":
        return _Cluster(
            startup_nodes=[ClusterNode(host, port) for host, port in topology.nodes],
            username=topology.username,
            password=topology.password,
            max_connections=max_connections,
            wait_timeout=timeout,
            # Only the count is used: a connection error or timeout reloads the layout and retries.
            retry=Retry(NoBackoff(), retries=1),
            **options,
        )
    retry = Retry(NoBackoff(), retries=1, supported_errors=(RedisConnectionError,))
    if topology.kind == "sentinel":
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            list(topology.nodes),
            # The sentinels get the primary's credentials too: the common Helm charts protect
            # both with one password, so that only auth can even ask where the primary is.
            sentinel_kwargs={
                **{key: options[key] for key in ("socket_timeout", "socket_connect_timeout")},
                "username": topology.username,
                "password": topology.password,
                # redis-py's own default retries a refused or unauthenticated sentinel three times
                # with backoff of up to 7 s, so a request took ~20 s to fail with every sentinel
                # away or a wrong password: one quick retry per sentinel, like every other link.
                "retry": retry,
            },
        )
        client: redis.Redis = sentinel.master_for(
            topology.service,
            redis_class=_SentinelPrimary,
            connection_pool_class=_SentinelPool,
            db=topology.db,
            username=topology.username,
            password=topology.password,
            max_connections=max_connections,
            timeout=timeout,
            retry=retry,
            **options,
        )
        assert isinstance(client, _SentinelPrimary)
        assert isinstance(client.connection_pool, _SentinelPool)
        client.link = _sentinel_link(client.connection_pool, topology, timeout)
        return client
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, retry=retry, **options
    )
    single = _Linked.from_pool(pool)
    assert isinstance(single, _Linked)
    single.link = _single_link(pool, timeout)
    return single


class _Cluster(RedisCluster):
    """A Cluster client that learns the layout before it routes, and waits for a connection.

    redis-py (8.1) picks a command's node before it first loads the layout, so commands that
    race through a fresh client go to an arbitrary node, collect MOVED replies, and the reload
    those trigger closes connections other commands are using (AttributeError, a 500). Seen on
    most cold starts of 30 concurrent requests here; loading the layout first prevents it.

    Its nodes also fail a command at once when their ``max_connections`` are all busy; like the
    pools of the other topologies, this client lets that many commands run and makes the next
    wait up to ``wait_timeout`` seconds instead.
    """

    def __init__(self, *, wait_timeout: float, max_connections: int, **kwargs: Any):
        super().__init__(max_connections=max_connections, **kwargs)
        self._wait_timeout = wait_timeout
        self._running = asyncio.Semaphore(max_connections)

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self._wait_timeout):
                await self._running.acquire()
        except TimeoutError:
            raise RedisConnectionError("no connection available") from None
        try:
            if self.get_default_node() is None:
                # Idempotent and locked: concurrent first commands wait for one load of the layout.
                await self.initialize()
            return await super().execute_command(*args, **kwargs)
        finally:
            self._running.release()


class _SentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool, waiting for a free connection like the others, that notices a switch.

    redis-py asks the sentinels for the primary only when a connection breaks or meets READONLY.
    After a failover that left the old primary running, that one takes writes until the
    sentinels demote it, 8 s or more later, and every write it took meanwhile (a logout, a new
    session) is lost when it resyncs from the new primary. So the sentinels are asked again, in
    the background, at most every :data:`PRIMARY_CHECK_SECONDS`, and a connection to a server
    that is no longer the primary is reconnected before it is used.
    """

    def __init__(self, service_name: str, sentinel_manager: Sentinel, **kwargs: Any):
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._checked_at = -math.inf
        self._check: asyncio.Task[None] | None = None

    def check_primary_soon(self) -> None:
        """Ask the sentinels for the primary in the background, unless that was done within a second."""
        now = time.monotonic()
        if now - self._checked_at >= PRIMARY_CHECK_SECONDS and self.master_address is not None:
            self._checked_at = now
            self._check = asyncio.create_task(self._check_primary())

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.check_primary_soon()
        connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        if self.master_address is not None and (connection.host, connection.port) != self.master_address:
            try:
                await connection.disconnect()
                await connection.connect()
            except BaseException:
                await self.release(connection)
                raise
        return connection

    async def aclose(self) -> None:
        if self._check is not None:
            self._check.cancel()
        await super().aclose()

    async def _check_primary(self) -> None:
        try:
            # Records a new address and closes the idle connections to the old one.
            await self.get_master_address()  # type: ignore[no-untyped-call]
        except RedisError as exc:
            # Sentinels away: keep the primary we know, which may well be fine.
            logger.warning("could not ask the sentinels for the primary: %s", type(exc).__name__)


class _Linked(redis.Redis):
    """A client that also owns the pipelined :class:`Link` the session path uses; closed with it."""

    link: Link | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self.link is not None:
            self.link.close()
        await super().aclose(close_connection_pool)


class _SentinelPrimary(_Linked):
    """The primary's client; closing it closes the sentinel clients too, which nothing else owns."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            pool = self.connection_pool
            if isinstance(pool, SentinelConnectionPool):
                await pool.sentinel_manager.aclose()


class Script:
    """A Lua script run in one round trip: ``EVALSHA`` first, ``EVAL`` (which loads it) on NOSCRIPT.

    Built for the session path, which runs one script per request. A client from :func:`connect`
    for one server or a Sentinel primary carries a :class:`~services.auth.redis_link.Link`, one
    pipelined socket, and the script runs there with its command packed from a prefix encoded
    once; elsewhere (a Cluster, which routes by key, TLS, a client made another way) it goes
    through the client's own ``evalsha``. On the link the failure rules are those of
    :func:`connect`: a broken socket, or a primary that turned replica (READONLY), is retried
    once on a fresh socket (to the current primary), and a call past the timeout fails.

    A server that lost its scripts (a restart, a failover to a replica that never ran them, a
    ``SCRIPT FLUSH``) answers NOSCRIPT; the call then sends the source with ``EVAL``, which runs
    and caches it, so the next calls are ``EVALSHA`` again.
    """

    def __init__(self, client: Client, source: str):
        self._client = client
        self._source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1
        self._link: Link | None = client.link if isinstance(client, _Linked) else None
        self._evalsha = [b"EVALSHA", self.sha.encode()]
        self._eval = [b"EVAL", source.encode()]

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        """The script's reply, decoded as the client decodes; redis-py's errors on failure."""
        link = self._link
        if link is None:
            return await self._through_client(keys, args)
        arguments = [str(len(keys)).encode(), *(_encode(value) for value in (*keys, *args))]
        try:
            return await self._on_link(link, pack(self._evalsha + arguments))
        except NoScriptError:
            return await self._on_link(link, pack(self._eval + arguments))

    async def _through_client(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        client = self._client
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await client.eval(self._source, len(keys), *keys, *args)

    @staticmethod
    async def _on_link(link: Link, command: bytes) -> Any:
        try:
            return await link.call(command)
        except ReadOnlyError:
            # A demoted primary still answers reads: find the primary again before writing.
            link.close()
        except RedisConnectionError:
            pass
        # Once more on a fresh socket; a second failure is the caller's (a 503).
        try:
            return await link.call(command)
        except ReadOnlyError:
            link.close()
            raise RedisConnectionError("Redis answered as a replica twice") from None


def _encode(value: str | int) -> bytes:
    return value.encode() if isinstance(value, str) else str(value).encode()


def _single_link(pool: redis.ConnectionPool, timeout: float) -> Link | None:
    """A link to the pool's server, or None for a kind of connection a link cannot make (TLS)."""
    kwargs = pool.connection_kwargs
    if pool.connection_class is redis.UnixDomainSocketConnection:
        address: Address = ("unix", kwargs["path"], 0)
    elif pool.connection_class is redis.Connection:
        address = ("tcp", kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)))
    else:
        return None

    async def locate() -> Address:
        return address

    return Link(
        locate,
        timeout=timeout,
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        db=int(kwargs.get("db") or 0),
    )


def _sentinel_link(pool: _SentinelPool, topology: Topology, timeout: float) -> Link:
    """A link to the primary the sentinels name, replaced when they name another."""

    async def locate() -> Address:
        host, port = await pool.get_master_address()  # type: ignore[no-untyped-call]
        return ("tcp", host, port)

    def current(address: Address) -> bool:
        pool.check_primary_soon()
        primary = pool.master_address
        return primary is None or address == ("tcp", *primary)

    return Link(
        locate,
        timeout=timeout,
        username=topology.username,
        password=topology.password,
        db=topology.db,
        current=current,
    )


def _schemes() -> str:
    return ", ".join(f"{scheme}://" for scheme in (*SINGLE_SCHEMES, SENTINEL_SCHEME, CLUSTER_SCHEME))


def _without(exc: Exception, url: str) -> str:
    # redis-py's and urllib's messages name a bad option or port, but keep the URL out regardless.
    text = str(exc)
    return "malformed" if url in text or "@" in text else text


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    username, has_password, password = userinfo.partition(":")
    return unquote(username) or None, unquote(password) if has_password else None


def _nodes(hosts: str, scheme: str) -> tuple[tuple[str, int], ...]:
    nodes = []
    for entry in hosts.split(","):
        match = _HOST_PORT.match(entry.strip())
        port = int(match["port"]) if match else 0
        if match is None or not 1 <= port <= 65535:
            raise ValueError(f"{scheme}:// needs host:port[,host:port...], with a port on every host")
        nodes.append((match["ipv6"] or match["host"], port))
    return tuple(nodes)


Send: TypeAlias = Callable[..., Awaitable[Any]]
# How to name what one call sends (the command, PIPELINE), from that call's arguments.
Namer: TypeAlias = Callable[..., str]


def around_sends(client: Client, wrap: Callable[[Send, Namer], Send]) -> Client:
    """``client`` with each way it sends to Redis passed through ``wrap``, for tracing and health.

    The ways are every command (``execute_command``), every pipeline's ``execute`` and the
    session link's packed call, which bypasses ``execute_command``. ``wrap`` also gets a namer
    for what a call sends: the command's name or ``PIPELINE``, never a key or a value.
    """
    client.execute_command = wrap(client.execute_command, _command_name)  # type: ignore[method-assign,assignment]
    new_pipeline = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = new_pipeline(*args, **kwargs)
        pipe.execute = wrap(pipe.execute, _pipeline_name)  # type: ignore[method-assign,assignment]
        return pipe

    client.pipeline = pipeline  # type: ignore[method-assign]
    link = client.link if isinstance(client, _Linked) else None
    if link is not None:
        link.call = wrap(link.call, packed_name)  # type: ignore[method-assign,assignment]
    return client


def _command_name(*args: Any, **options: Any) -> str:
    return str(args[0]).upper() if args else "UNKNOWN"


def _pipeline_name(*args: Any, **kwargs: Any) -> str:
    return "PIPELINE"


def packed_name(command: bytes) -> str:
    """The command's name from its RESP array (``*N``, ``$len``, name): never a key or a value."""
    parts = command.split(b"\r\n", 3)
    return parts[2].decode("ascii", "replace").upper() if len(parts) > 2 else "UNKNOWN"
