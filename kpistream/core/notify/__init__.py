"""Alert notification: from alert events to grouped, silenced, rendered notifications.

Contract: :class:`Notifier` takes :class:`AlertEvent` s and the clock and returns the
:class:`Notification` s due; each decision (routing, silences, inhibition, deduplication and
repeats, grouping, quiet hours) is a pure stage in a module of its own; :func:`render` turns a
notification into a title, plain text and markdown in the owner's language.
"""

from kpistream.core.notify.model import AlertEvent, Notification, OwnerPolicy, Silence
from kpistream.core.notify.pipeline import Notifier
from kpistream.core.notify.render import Message, render

__all__ = ["AlertEvent", "Message", "Notification", "Notifier", "OwnerPolicy", "Silence",
           "render"]
