"""A logging filter that removes known secret strings from third-party log records.

Apprise's stock plugins log their full endpoint at debug level (``wecombot://`` logs
``...webhook/send?key=KEY``), and ``requests`` errors quote URLs. kpistream's own logs only
ever show :func:`~kpistream.shell.delivery.secrets.redact`-ed URLs; this filter is the safety
net on the ``apprise`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from kpistream.shell.delivery.secrets import HIDDEN

__all__ = ["MIN_SECRET_LEN", "SecretScrubber"]

MIN_SECRET_LEN = 3  # shorter strings would shred ordinary words in log lines


class SecretScrubber(logging.Filter):
    """Replaces every registered secret in a record's message with ``***``.

    >>> scrub = SecretScrubber()
    >>> scrub.add(["tok123"])
    >>> record = logging.LogRecord("apprise", 10, "", 0, "url %s", ("x?key=tok123",), None)
    >>> scrub.filter(record), record.getMessage()
    (True, 'url x?key=***')
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, secrets: Iterable[str]) -> None:
        """Register more strings to hide."""
        self._secrets.update(s for s in secrets if len(s) >= MIN_SECRET_LEN)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record's message without secrets; never drops the record."""
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep it, the handler will report it
            return True
        scrubbed = message
        for secret in sorted(self._secrets, key=len, reverse=True):
            scrubbed = scrubbed.replace(secret, HIDDEN)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True
