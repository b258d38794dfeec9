"""Shared fixtures: one embedded broker per test session, and fresh topics on it."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from kpistream.shell.broker import EmbeddedBroker, ensure_topics

#: local SMTP and HTTP receivers for delivery tests (tests/receivers.py)
pytest_plugins = ["receivers"]

NewTopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture(scope="session")
async def broker() -> AsyncIterator[EmbeddedBroker]:
    """The embedded broker, started once per session on a free port and stopped at the end."""
    async with EmbeddedBroker() as running:
        yield running


@pytest.fixture
async def new_topic(broker: EmbeddedBroker) -> NewTopicFactory:
    """A factory: ``await new_topic(partitions=4)`` creates a uniquely named topic, returns it."""
    run = uuid.uuid4().hex[:8]
    numbers = itertools.count(1)

    async def create(partitions: int = 4) -> str:
        name = f"test-{run}-{next(numbers)}"
        await ensure_topics(broker.bootstrap, {name: partitions})
        return name

    return create
