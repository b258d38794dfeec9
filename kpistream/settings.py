"""Settings of the daemon: command-line flags, else ``KPISTREAM_*`` environment variables."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from kpistream.core.durations import parse_duration_ms

__all__ = ["Settings"]


def _ms(value: object) -> object:
    return parse_duration_ms(value) if isinstance(value, str) else value


DurationMs = Annotated[int, BeforeValidator(_ms)]


class Settings(BaseSettings):
    """Every option of ``kpistream run``; ``KPISTREAM_BROKER`` sets ``broker`` and so on.

    >>> Settings(broker="kafka://k:9092", idle_timeout="30s").idle_timeout
    30000
    """

    model_config = SettingsConfigDict(env_prefix="KPISTREAM_", extra="ignore")

    broker: str | None = Field(None, description="kafka://host:port; none: embedded broker")
    rules: str = "rules"
    metrics_addr: str = "127.0.0.1:9464"
    start_from: Literal["earliest", "latest"] = "latest"
    group_id: str = "kpistream"
    session_timeout: DurationMs = 10_000
    idle_timeout: DurationMs = 15_000
    max_future: DurationMs = 3_600_000
    batch_max_records: int = Field(20_000, ge=1)
    poll_timeout: DurationMs = 200
    dead_letter_topic: str | None = None
    broker_wait: DurationMs = 60_000
    checkpoint_interval: DurationMs = 5_000
    checkpoint_topic: str = "kpistream-checkpoints"
    panes_topic: str | None = Field(None, description="final panes from every worker to the "
                                    "merge stage (one partition); default: <group id>-panes")
    delivery_log_topic: str = "kpistream-delivered"
    silences_topic: str = "kpistream-silences"
    feedback_topic: str = "kpistream-feedback"
    grafana_url: str | None = None
    alertmanager_url: str | None = Field(
        None, pattern=r"^https?://[^/\s]+", description="http://HOST:PORT of an Alertmanager "
        "to forward alert state to")

    @property
    def panes(self) -> str:
        """The panes topic of this consumer group (each group merges its own panes)."""
        return self.panes_topic or f"{self.group_id}-panes"
