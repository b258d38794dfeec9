"""Real receivers on loopback for delivery tests: an SMTP server and an HTTP endpoint.

Fixtures ``smtp_receiver`` and ``http_receiver`` start one per test on a free port of
127.0.0.1. Waiting for arrival blocks on a condition with a deadline (no sleeps).
Use them from a conftest with ``from receivers import http_receiver, smtp_receiver``
(``tests/`` is on ``sys.path`` because it has no ``__init__.py``), or list ``"receivers"`` in
the root conftest's ``pytest_plugins``.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

__all__ = [
    "HttpReceiver",
    "ReceivedMail",
    "ReceivedRequest",
    "SmtpReceiver",
    "http_receiver",
    "smtp_receiver",
]

T = TypeVar("T")
DEADLINE_S = 5.0
SMTP_USER, SMTP_PASSWORD = "alerts", "smtp-Pa55word-xyz"


class _Inbox(Generic[T]):
    """A thread-safe list that lets a test wait for the n-th item."""

    def __init__(self) -> None:
        self.items: list[T] = []
        self._arrived = threading.Condition()

    def put(self, item: T) -> None:
        with self._arrived:
            self.items.append(item)
            self._arrived.notify_all()

    def wait(self, count: int, timeout_s: float) -> list[T]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.items) >= count, timeout_s):
                raise AssertionError(f"expected {count} arrivals in {timeout_s}s, got {self.items}")
            return list(self.items)


# --- HTTP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the receiver saw it."""

    method: str
    path: str  # without the query
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 200  # what the receiver answered

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpReceiver:
    """A local HTTP endpoint recording every request; can fail the next N with a status."""

    url: str = ""
    inbox: _Inbox[ReceivedRequest] = field(default_factory=_Inbox)
    reply: dict[str, Any] = field(default_factory=lambda: {"errcode": 0, "errmsg": "ok", "code": 0})
    _failures: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def requests(self) -> list[ReceivedRequest]:
        return list(self.inbox.items)

    def fail_next(self, times: int, status: int = 500) -> None:
        """Answer the next ``times`` requests with ``status`` (then 200 again)."""
        with self._lock:
            self._failures.extend([status] * times)

    def status_for_next(self) -> int:
        with self._lock:
            return self._failures.pop(0) if self._failures else 200

    async def wait_for(
        self, count: int = 1, timeout_s: float = DEADLINE_S
    ) -> list[ReceivedRequest]:
        """The requests once at least ``count`` arrived; fails after ``timeout_s``."""
        return await asyncio.to_thread(self.inbox.wait, count, timeout_s)


def _handler_for(receiver: HttpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
            status = receiver.status_for_next()
            body = json.dumps(receiver.reply if status == 200 else {"error": status}).encode()
            request = ReceivedRequest(
                self.command, split.path, query, dict(self.headers), self.rfile.read(length),
                status,
            )
            receiver.inbox.put(request)  # before the reply: once a send returns, it is here
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_PUT = do_GET = _record

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: tests assert on records, not on stderr."""

    return Handler


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    """A fresh HTTP receiver on 127.0.0.1 at a free port; ``.url`` is its base URL."""
    receiver = HttpReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="http-receiver", daemon=True
    )
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(DEADLINE_S)


# --- SMTP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceivedMail:
    """One message accepted by the SMTP receiver, parsed."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def body(self, subtype: str = "plain") -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        return part.get_content() if part is not None else ""

    @property
    def attachments(self) -> list[tuple[str, str, bytes]]:
        """(filename, content type, bytes) of every attachment."""
        return [
            (p.get_filename() or "", p.get_content_type(), p.get_content())
            for p in self.message.iter_attachments()
        ]


class _Handler:
    def __init__(self, inbox: _Inbox[ReceivedMail]) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.inbox.put(ReceivedMail(envelope.mail_from, tuple(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


def _authenticate(
    server: Any, session: Any, envelope: Any, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        SMTP_USER.encode(),
        SMTP_PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False)


@dataclass
class SmtpReceiver:
    """A local SMTP server (aiosmtpd) accepting ``SMTP_USER``/``SMTP_PASSWORD`` logins."""

    host: str
    port: int
    user: str = SMTP_USER
    password: str = SMTP_PASSWORD
    inbox: _Inbox[ReceivedMail] = field(default_factory=_Inbox)

    @property
    def messages(self) -> list[ReceivedMail]:
        return list(self.inbox.items)

    async def wait_for(self, count: int = 1, timeout_s: float = DEADLINE_S) -> list[ReceivedMail]:
        """The messages once at least ``count`` arrived; fails after ``timeout_s``."""
        return await asyncio.to_thread(self.inbox.wait, count, timeout_s)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp_receiver() -> Iterator[SmtpReceiver]:
    """A fresh SMTP server on 127.0.0.1 at a free port, AUTH LOGIN/PLAIN without TLS."""
    receiver = SmtpReceiver("127.0.0.1", _free_port())
    controller = Controller(
        _Handler(receiver.inbox),
        hostname=receiver.host,
        port=receiver.port,
        authenticator=_authenticate,
        auth_require_tls=False,
        ready_timeout=DEADLINE_S,
    )
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()
