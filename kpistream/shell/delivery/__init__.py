"""Apprise delivery: from a rendered notification to every channel of its owner.

Contract:

- :class:`Sender` sends one :class:`~kpistream.core.notify.model.Notification` to each of its
  Apprise URLs, off the event loop, with per-URL retries and backoff, at most once per
  (notification id, URL) it remembers, and never raises a delivery error: it returns a
  :class:`Delivery` with one :class:`UrlOutcome` per URL.
- URLs name secrets as ``${ENV_VAR}`` (:func:`expand_url`); anything shown to people goes
  through :func:`redact`; :func:`channel_of` is the ``channel`` metric label.
- Importing this package registers the ``kpiwecom://``, ``kpidingtalk://``, ``kpifeishu://``
  and ``kpilark://`` Apprise plugins (see :mod:`~kpistream.shell.delivery.plugins`).
"""

from kpistream.shell.delivery.chart import notification_chart
from kpistream.shell.delivery.secrets import MissingVariable, channel_of, expand_url, redact
from kpistream.shell.delivery.sender import (
    Counter,
    Delivery,
    Rendered,
    RetryPolicy,
    Sender,
    UrlOutcome,
    counter_sink,
)

__all__ = [
    "Counter",
    "Delivery",
    "MissingVariable",
    "Rendered",
    "RetryPolicy",
    "Sender",
    "UrlOutcome",
    "channel_of",
    "counter_sink",
    "expand_url",
    "notification_chart",
    "redact",
]
