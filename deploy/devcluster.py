"""The local cluster as real processes: Redis, auth, orders and gateway, for ``make run`` and e2e tests.

``python -m deploy.devcluster`` runs it in the foreground with every child's output prefixed by
its name; tests import :class:`Cluster` and start it on free ports in a temporary directory.
``AUTH_REPLICAS=N`` runs N auth processes (``auth-1`` ... ``auth-N``) on one Redis, one key
directory and one session secret, and the gateway balances across them.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from deploy.processes import free_port, live_pid, with_parent_death_signal
from deploy.redis_server import RedisServer
from services.auth.settings import DEMO_PASSWORD

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("auth", "orders", "gateway")
MAX_AUTH_REPLICAS = 16
DEMO_USERS = ("alice@example.com (user)", "admin@example.com (admin)")

# Variables this module decides per service; inherited values must not leak into a child
# (a REDIS_URL in the caller's shell must not reach orders or the gateway). ``<NAME>_WORKERS`` is
# deliberately not among them: ``ORDERS_WORKERS=4 make run`` is how a developer tries a service
# with several workers, which is why ServiceProcess.stop() stops a whole process group.
_MANAGED_ENV = frozenset(
    {
        "APP_ENV",
        "LOG_LEVEL",
        "TOKEN_ISSUER",
        "JWKS_URL",
        "PUBLIC_ORIGIN",
        "PYTHONUNBUFFERED",
        "REDIS_URL",
        "AUTH_KEYS_DIR",
        "SESSION_SECRET",
        "SESSION_SECRET_FILE",
        "ORDERS_DB_PATH",
        "AUTH_URL",
        "ORDERS_URL",
        "DEMO_PASSWORD",
        "TRUSTED_PROXIES",
        *(f"{name.upper()}_{part}" for name in SERVICES for part in ("HOST", "PORT")),
    }
)

OutputSink = Callable[[str, str], None]

# After SIGKILL a process group ends within moments unless the kernel is stuck on its I/O.
_KILL_WAIT_SECONDS = 5.0


class ClusterError(RuntimeError):
    """A step of starting the cluster failed; the message says which and why."""


@dataclass(frozen=True)
class ClusterConfig:
    """Where the cluster keeps its state and which loopback ports it listens on."""

    state_dir: Path = REPO_ROOT / "var"
    gateway_port: int = 8000
    # One port per auth replica; one replica, named ``auth``, unless there are several.
    auth_ports: tuple[int, ...] = (8001,)
    orders_port: int = 8002
    redis_port: int = 6379
    log_level: str = "info"
    env: Mapping[str, str] = field(default_factory=dict)
    ready_timeout: float = 20.0
    stop_timeout: float = 10.0
    output_lines: int = 50_000

    @property
    def public_origin(self) -> str:
        return f"http://localhost:{self.gateway_port}"

    @property
    def auth_names(self) -> tuple[str, ...]:
        """The auth processes' names: ``auth`` alone, or ``auth-1`` ... ``auth-N`` for N replicas."""
        if len(self.auth_ports) == 1:
            return ("auth",)
        return tuple(f"auth-{number}" for number in range(1, len(self.auth_ports) + 1))

    @property
    def processes(self) -> tuple[str, ...]:
        """Every service process by name, in start order."""
        return (*self.auth_names, "orders", "gateway")

    def port(self, name: str) -> int:
        """The port of ``name``: one service process (``auth-2`` with replicas) or ``redis``."""
        ports = {
            "gateway": self.gateway_port,
            "orders": self.orders_port,
            "redis": self.redis_port,
            **dict(zip(self.auth_names, self.auth_ports, strict=True)),
        }
        try:
            return ports[name]
        except KeyError:
            if name == "auth":
                raise ValueError(f"auth has replicas; name one of {', '.join(self.auth_names)}") from None
            raise ValueError(f"unknown service {name!r}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, terminal: bool = False) -> ClusterConfig:
        """``make run``'s configuration: ports from ``GATEWAY_PORT`` etc., state in ``VAR_DIR``.

        On a ``terminal`` the services log text unless ``LOG_FORMAT`` says otherwise: their own
        output is a pipe to this process, so on their own they would pick JSON.
        """

        def read_port(name: str, default: int) -> int:
            raw = environ.get(name) or str(default)
            if not (raw.isascii() and raw.isdigit() and 0 < int(raw) < 65536):
                raise ClusterError(f"{name} must be a TCP port, got {raw!r}")
            return int(raw)

        replicas = environ.get("AUTH_REPLICAS") or "1"
        if not (replicas.isascii() and replicas.isdigit() and 1 <= int(replicas) <= MAX_AUTH_REPLICAS):
            raise ClusterError(f"AUTH_REPLICAS must be 1 to {MAX_AUTH_REPLICAS}, got {replicas!r}")
        others = {read_port(name, port) for name, port in (("GATEWAY_PORT", 8000), ("ORDERS_PORT", 8002))}
        others.add(read_port("REDIS_PORT", 6379))
        return cls(
            state_dir=Path(environ.get("VAR_DIR") or REPO_ROOT / "var"),
            gateway_port=read_port("GATEWAY_PORT", 8000),
            auth_ports=_replica_ports(read_port("AUTH_PORT", 8001), int(replicas), taken=others),
            orders_port=read_port("ORDERS_PORT", 8002),
            redis_port=read_port("REDIS_PORT", 6379),
            log_level=environ.get("LOG_LEVEL") or "info",
            env={"LOG_FORMAT": "text"} if terminal and not environ.get("LOG_FORMAT") else {},
        )

    @classmethod
    def on_free_ports(
        cls, state_dir: Path, env: Mapping[str, str] | None = None, *, auth_replicas: int = 1
    ) -> ClusterConfig:
        """A configuration for tests: distinct free loopback ports and state under ``state_dir``."""
        ports: list[int] = []
        while len(ports) < 3 + auth_replicas:
            if (port := free_port()) not in ports:
                ports.append(port)
        gateway, orders, redis, *auth = ports
        return cls(
            state_dir=state_dir,
            gateway_port=gateway,
            auth_ports=tuple(auth),
            orders_port=orders,
            redis_port=redis,
            env=dict(env or {}),
        )


class ServiceProcess:
    """One service child process with its output pumped, line by line, into memory and a sink.

    The process may be stopped and started again; its output accumulates across runs.
    """

    def __init__(self, name: str, sink: OutputSink | None, *, keep_lines: int, module: str | None = None):
        self.name = name
        self.module = f"services.{module or name}"
        self._output = collections.deque[str](maxlen=keep_lines)
        self._output_lock = threading.Lock()
        self._sink = sink
        self._process: subprocess.Popen[bytes] | None = None
        self._pump: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs, else None."""
        return live_pid(self._process)

    def lines(self) -> list[str]:
        """The last ``keep_lines`` lines of output, oldest first."""
        with self._output_lock:
            return list(self._output)

    @property
    def exit_code(self) -> int | None:
        """The exit status once a started process has ended, else None."""
        return None if self._process is None else self._process.poll()

    def start(self, env: Mapping[str, str]) -> None:
        # A session of its own keeps a terminal's Ctrl-C away from the child, so the cluster
        # stops its services in order instead of all at once. It also makes the child the leader
        # of a process group that holds the service's workers, for stop() to signal as one.
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            with_parent_death_signal([sys.executable, "-m", self.module]),
            cwd=REPO_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._pump = threading.Thread(
            target=self._read_output, args=(self._process,), name=f"{self.name}-output", daemon=True
        )
        self._pump.start()

    def _read_output(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with self._output_lock:
                self._output.append(line)
            if self._sink is not None:
                self._sink(self.name, line)
        process.stdout.close()

    def stop(self, timeout: float) -> None:
        """SIGTERM to the child's process group, then SIGKILL to what is left of it after ``timeout`` s.

        The group, not only the child: with ``<NAME>_WORKERS`` above 1 the child is the service's
        supervisor, and its workers and multiprocessing's resource tracker must go too, even when
        the supervisor is already dead. Returns once the output is drained.
        """
        process, self._process = self._process, None
        if process is None:
            return
        # start_new_session=True made the child a group leader: its pid is the group's id.
        group = process.pid
        _signal_group(group, signal.SIGTERM)
        if not _wait_for_group(process, timeout):
            logger.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
            _signal_group(group, signal.SIGKILL)
            _wait_for_group(process, _KILL_WAIT_SECONDS)
        if self._pump is not None:
            self._pump.join(timeout=5)
            self._pump = None


class Cluster:
    """Redis, auth, orders and gateway as child processes, started and stopped in dependency order.

    A service is named by its process: ``auth``, or ``auth-1`` ... ``auth-N`` with replicas.
    With replicas, ``auth`` still names all of them where that makes sense (starting, stopping,
    ``running``); where one process is meant (``pid``, ``output``, ``service_url``) it is an error.
    """

    def __init__(self, config: ClusterConfig, *, on_output: OutputSink | None = None):
        self.config = config
        self.state_dir = config.state_dir.resolve()
        self.redis = RedisServer(self.state_dir / "redis", port=config.redis_port, persist=True)
        self._services = {
            name: ServiceProcess(
                name, on_output, keep_lines=config.output_lines, module=name.partition("-")[0]
            )
            for name in config.processes
        }
        self._redis_started = False

    @property
    def auth_replicas(self) -> tuple[str, ...]:
        """The auth processes' names (``("auth",)`` without replicas)."""
        return self.config.auth_names

    def _members(self, name: str) -> tuple[str, ...]:
        """The processes ``name`` stands for: ``auth`` is every auth replica."""
        if name == "auth":
            return self.auth_replicas
        if name == "redis" or name in self._services:
            return (name,)
        raise ValueError(f"unknown service {name!r}")

    def _service(self, name: str) -> ServiceProcess:
        """The one process ``name`` names."""
        if name == "auth" and len(self.auth_replicas) > 1:
            raise ValueError(f"auth has replicas; name one of {', '.join(self.auth_replicas)}")
        try:
            return self._services[name]
        except KeyError:
            raise ValueError(f"unknown service {name!r}") from None

    @property
    def url(self) -> str:
        """The gateway, as the public sees it."""
        return self.config.public_origin

    @property
    def public_origin(self) -> str:
        return self.config.public_origin

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def session_secret_file(self) -> Path:
        return self.state_dir / "session-secret"

    @property
    def orders_db_path(self) -> Path:
        return self.state_dir / "orders.sqlite3"

    @property
    def demo_password(self) -> str:
        """The password auth seeds the demo users with."""
        return self._demo_password_override() or DEMO_PASSWORD

    @property
    def demo_password_is_default(self) -> bool:
        return self._demo_password_override() is None

    def _demo_password_override(self) -> str | None:
        return self.config.env.get("DEMO_PASSWORD") or os.environ.get("DEMO_PASSWORD") or None

    def service_url(self, name: str) -> str:
        """A service's own address on loopback (``redis`` gives a ``redis://`` URL)."""
        if name == "redis":
            return self.redis.url
        return f"http://127.0.0.1:{self.config.port(name)}"

    def output(self, name: str) -> list[str]:
        """What a service has written to stdout and stderr, across restarts (the last ``output_lines``)."""
        return self._service(name).lines()

    def running(self, name: str) -> bool:
        """Whether the service runs (every replica, for ``auth`` with replicas)."""
        if name == "redis":
            return self.redis.running
        return all(self._services[member].running for member in self._members(name))

    def pid(self, name: str) -> int | None:
        """The process id of a running service (or ``redis``), else None."""
        if name == "redis":
            return self.redis.pid
        return self._service(name).pid

    def auth_urls(self) -> list[str]:
        """Every auth replica's own address, in order."""
        return [self.service_url(name) for name in self.auth_replicas]

    def env_for(self, name: str) -> dict[str, str]:
        """The environment ``name`` runs with: inherited basics, the contract's variables, then overrides."""
        config = self.config
        env = {key: value for key, value in os.environ.items() if key not in _MANAGED_ENV}
        env.update(
            APP_ENV="dev",
            LOG_LEVEL=config.log_level,
            TOKEN_ISSUER=config.public_origin,
            # Every replica serves the same keys: a verifier asks the next when one is down.
            JWKS_URL=",".join(f"{url}/.well-known/jwks.json" for url in self.auth_urls()),
            PUBLIC_ORIGIN=config.public_origin,
            PYTHONUNBUFFERED="1",
        )
        for service in SERVICES:
            env[f"{service.upper()}_HOST"] = "127.0.0.1"
        env.update(GATEWAY_PORT=str(config.gateway_port), ORDERS_PORT=str(config.orders_port))
        # A replica listens on its own port; to anyone else (and the CLI) auth is the first one.
        auth_port = config.port(name) if name in self.auth_replicas else config.auth_ports[0]
        env["AUTH_PORT"] = str(auth_port)
        if name == "auth" or name in self.auth_replicas:
            env.update(
                REDIS_URL=self.redis.url,
                AUTH_KEYS_DIR=str(self.keys_dir),
                SESSION_SECRET_FILE=str(self.session_secret_file),
                # The gateway reaches auth over loopback; its X-Forwarded-For names the client.
                TRUSTED_PROXIES="127.0.0.1,::1",
                # Every local client is 127.0.0.1, so one per-IP budget would be everyone's: the
                # per-account budgets still apply, and tests that exercise this one set it low.
                LOGIN_IP_LIMIT="100000",
            )
            # Only auth seeds users, so only auth sees the demo password.
            demo_password = self._demo_password_override()
            if demo_password:
                env["DEMO_PASSWORD"] = demo_password
        elif name == "orders":
            env["ORDERS_DB_PATH"] = str(self.orders_db_path)
        elif name == "gateway":
            env.update(AUTH_URL=",".join(self.auth_urls()), ORDERS_URL=self.service_url("orders"))
        env.update(config.env)
        return env

    def prepare(self) -> None:
        """Create the state directory, the session secret and a signing key, unless they exist."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._ensure_session_secret()
        self._ensure_signing_key()

    def start(self) -> None:
        """Bring up whatever is not running yet; each step is skipped when already done."""
        self.prepare()
        self.start_service("redis")
        for name in self.config.processes:
            self.start_service(name)

    def auth_cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """Run ``python -m services.auth ARGS`` against this cluster, e.g. ``users add EMAIL``."""
        return subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "services.auth", *args],
            cwd=REPO_ROOT,
            env=self.env_for("auth"),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> None:
        """Stop everything in reverse dependency order; safe to call more than once."""
        for name in reversed(("redis", *self.config.processes)):
            self.stop_service(name)

    def start_service(self, name: str, *, wait: bool = True) -> None:
        """Start one service (or ``redis``); unless ``wait`` is False, return once it reports ready.

        ``auth`` with replicas starts each one that is not running.
        """
        if len(members := self._members(name)) > 1:
            # The replicas share only Redis and the key directory: started together, they are
            # ready in about the time one takes to import and start.
            for member in members:
                self.start_service(member, wait=False)
            if wait:
                for member in members:
                    self._wait_until_ready(member)
            return
        if self.running(name):
            return
        port = self.config.port(name)
        if not _port_is_free(port):
            variable = port_variable(name)
            raise ClusterError(
                f"cannot start {name}: 127.0.0.1:{port} is already in use (another `make run`?); "
                f"{variable} moves it, e.g. {variable}={_free_port_near(port)} make run"
            )
        if name == "redis":
            try:
                self.redis.start()
            except TimeoutError as exc:
                raise ClusterError(f"cannot start redis: {exc}") from None
            self._redis_started = True
            return
        logger.info("starting %s on 127.0.0.1:%d", name, port)
        service = self._services[name]
        service.start(self.env_for(name))
        if wait:
            self._wait_until_ready(name)

    def stop_service(self, name: str) -> None:
        """Stop one service (or ``redis``, or every auth replica); a no-op when it is not running."""
        if name == "redis":
            self._redis_started = False
            self.redis.stop()
            return
        for member in reversed(self._members(name)):
            self._services[member].stop(self.config.stop_timeout)

    def exited(self) -> dict[str, int | None]:
        """Started processes that have ended without being stopped, with their exit status if known."""
        ended: dict[str, int | None] = {
            name: code for name, service in self._services.items() if (code := service.exit_code) is not None
        }
        if self._redis_started and not self.redis.running:
            ended["redis"] = None
        return ended

    def _ensure_session_secret(self) -> None:
        path = self.session_secret_file
        with contextlib.suppress(FileExistsError):
            # O_EXCL with mode 0600: the secret is never readable by others, not even briefly.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
            logger.info("created a session secret in %s", path)

    def _ensure_signing_key(self) -> None:
        if any(self.keys_dir.glob("*.pem")):
            return
        logger.info("creating a signing key in %s", self.keys_dir)
        result = self.auth_cli("keys", "init")
        if result.returncode != 0:
            tail = _tail((result.stdout + result.stderr).splitlines())
            raise ClusterError(f"`services.auth keys init` failed with status {result.returncode}:\n{tail}")

    def _wait_until_ready(self, name: str) -> None:
        service = self._services[name]
        url = f"{self.service_url(name)}/readyz"
        deadline = time.monotonic() + self.config.ready_timeout
        last = "no answer yet"
        with httpx.Client(timeout=1.0) as client:
            while True:
                if not service.running:
                    raise ClusterError(
                        f"{name} exited with status {service.exit_code} before it was ready:\n"
                        f"{_tail(self.output(name))}"
                    )
                try:
                    response = client.get(url)
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
                else:
                    if response.status_code == 200:
                        logger.info("%s is ready", name)
                        return
                    last = f"HTTP {response.status_code}: {response.text[:500]}"
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"{name} was not ready after {self.config.ready_timeout:.0f} s ({last}):\n"
                        f"{_tail(self.output(name))}"
                    )
                time.sleep(0.05)

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def port_variable(name: str) -> str:
    """The variable that moves ``name``'s port: ``GATEWAY_PORT``, ``AUTH_PORT`` (every replica's)..."""
    return f"{name.partition('-')[0].upper()}_PORT"


def _free_port_near(port: int) -> int:
    """A port to suggest instead of ``port``: the first free one a hundred or more above it."""
    for candidate in range(port + 100, min(port + 1000, 65536)):
        if _port_is_free(candidate):
            return candidate
    return free_port()


def banner(cluster: Cluster) -> list[str]:
    """What ``make run`` prints once everything is ready: where to go and how to log in.

    Short lines, printed last: everything after them is logged at warning or for a request made.
    """
    # The default is the documented demo password; a chosen one is never echoed.
    password = DEMO_PASSWORD if cluster.demo_password_is_default else "the value of DEMO_PASSWORD"
    return [
        "-" * 60,
        f"ready: {cluster.url} (open it in a browser; use localhost)",
        f"demo users: {', '.join(DEMO_USERS)}",
        f"demo password: {password}",
        "press Ctrl-C to stop; LOG_LEVEL=debug also shows health checks",
        "-" * 60,
    ]


def _replica_ports(first: int, count: int, *, taken: set[int]) -> tuple[int, ...]:
    """``first``, then the next ports above it that no other service uses (8001, 8003, 8004, ...)."""
    ports = [first]
    candidate = first
    while len(ports) < count:
        candidate += 1
        if candidate > 65535:
            raise ClusterError(f"no room above AUTH_PORT={first} for {count} auth replicas")
        if candidate not in taken:
            ports.append(candidate)
    return tuple(ports)


def _signal_group(group: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signum)


def _wait_for_group(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether, within ``timeout`` seconds, the child has exited and nothing of its group runs on."""
    deadline = time.monotonic() + timeout
    while process.poll() is None or _group_is_running(process.pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _group_is_running(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    if sys.platform != "linux":
        return True
    # Workers whose supervisor died belong to init, and an init that never reaps (a container's
    # may not) keeps their zombies in the group for good; a zombie holds no port and no file.
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        state, _parent, member_of = stat.rsplit(")", 1)[1].split()[:3]
        if int(member_of) == group and state != "Z":
            return True
    return False


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        # As uvicorn does: connections of a previous run in TIME_WAIT do not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tail(lines: list[str], count: int = 30) -> str:
    return "\n".join(f"    {line}" for line in lines[-count:]) or "    (no output)"


class _Printer:
    """Writes each child's lines as ``name    | line``; one lock keeps lines from interleaving."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self._width = max(len(name) for name in (*names, "redis")) + 1

    def __call__(self, name: str, line: str) -> None:
        with self._lock:
            sys.stdout.write(f"{name:<{self._width}}| {line}\n")
            sys.stdout.flush()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    """Run the cluster until Ctrl-C or SIGTERM (exit 0) or until a child dies (exit 1)."""
    logging.basicConfig(level=logging.INFO, format="devcluster | %(message)s", stream=sys.stdout)
    # One line per readiness poll would bury the services' own output.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        config = ClusterConfig.from_env(os.environ, terminal=sys.stdout.isatty())
    except ClusterError as exc:
        logger.error("%s", exc)
        return 2
    cluster = Cluster(config, on_output=_Printer(config.processes))
    # SIGINT too: a shell starts background jobs with SIGINT ignored, and Python keeps that.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        cluster.start()
        for line in banner(cluster):
            logger.info("%s", line)
        while not (ended := cluster.exited()):
            time.sleep(0.5)
        for name, code in ended.items():
            status = "" if code is None else f" with status {code}"
            logger.error("%s exited unexpectedly%s; stopping the cluster", name, status)
        return 1
    except KeyboardInterrupt:
        logger.info("stopping")
        return 0
    except ClusterError as exc:
        logger.error("%s", exc)
        return 1
    finally:
        # A second Ctrl-C must not leave children behind half-way through stopping them.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        cluster.stop()
        logger.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
