"""Delivery fixtures: the loopback receivers, a recorder and a sender factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from delivery_support import SECRETS, Recorder, render

from kpistream.shell.delivery import RetryPolicy, Sender


@pytest.fixture
def recorder() -> Recorder:
    return Recorder({}, [])


@pytest.fixture
def make_sender(recorder: Recorder) -> Iterator[Callable[..., Sender]]:
    """``make_sender(**overrides)``: a Sender on the stand-in renderer, fake sleep, SECRETS."""
    made: list[Sender] = []

    def make(**overrides: object) -> Sender:
        options: dict = {
            "render": render,
            "environ": SECRETS,
            "count": recorder.count,
            "sleep": recorder.sleep,
            "retry": RetryPolicy(attempts=3, base_delay_s=1.0),
            "timeout_s": 5.0,
        } | overrides
        sender = Sender(**options)
        made.append(sender)
        return sender

    yield make
    for sender in made:
        sender.close()
