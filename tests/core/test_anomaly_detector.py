"""SeriesDetector on constructed series whose right answer is known."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from kpistream.core.anomaly import SHIFT_WINDOWS, AnomalyConfig, Judgement, SeriesDetector
from kpistream.core.demo_events import seasonality

WINDOW = 600_000  # 10-minute windows: 144 per day keeps the tests fast
PER_DAY = 86_400_000 // WINDOW


def noisy(n: int, seed: int = 1, level: float = 100.0, noise: float = 0.5) -> list[float]:
    """Flat series with seeded Gaussian noise."""
    rng = random.Random(seed)
    return [level + rng.gauss(0.0, noise) for _ in range(n)]


def daily_sine(n: int, seed: int = 1) -> list[float]:
    """Daily sine (amplitude 20) around 100 with seeded noise (sd 0.5)."""
    rng = random.Random(seed)
    return [100 + 20 * math.sin(2 * math.pi * k / PER_DAY) + rng.gauss(0.0, 0.5)
            for k in range(n)]


def run(values: list[float], config: AnomalyConfig | None = None,
        ends: list[int] | None = None) -> list[Judgement]:
    """Judgements of a fresh detector over ``values`` (window k ends at (k + 1) * WINDOW)."""
    detector = SeriesDetector(config or AnomalyConfig(window_ms=WINDOW))
    ends = ends or [(k + 1) * WINDOW for k in range(len(values))]
    return [detector.observe(end, value) for end, value in zip(ends, values, strict=True)]


def anomalies(judgements: list[Judgement]) -> list[int]:
    """Indices of the anomalous windows."""
    return [k for k, j in enumerate(judgements) if j.is_anomaly]


def test_spike_on_a_daily_sine_is_the_only_anomaly() -> None:
    values = daily_sine(8 * PER_DAY)
    spike = 6 * PER_DAY + 30
    values[spike] += 25.0
    judgements = run(values)
    assert anomalies(judgements) == [spike]
    assert judgements[spike].score > 0.5 > judgements[spike - 1].score
    assert judgements[spike].model == "seasonal-ewm"


def test_daily_profile_is_picked_and_follows_the_sine() -> None:
    values = daily_sine(6 * PER_DAY)
    detector = SeriesDetector(AnomalyConfig(window_ms=WINDOW))
    for k, value in enumerate(values):
        last = detector.observe((k + 1) * WINDOW, value)
    assert detector._best(len(values) * WINDOW).period_ms == 86_400_000
    assert last.expected == pytest.approx(values[-1], abs=4.0)  # amplitude 20, noise 0.5


@pytest.mark.parametrize(("direction", "flagged"), [("down", True), ("both", True),
                                                    ("up", False)])
def test_a_drop_counts_only_for_down_and_both(direction: str, flagged: bool) -> None:
    values = noisy(600)
    values[500] -= 30.0
    judgements = run(values, AnomalyConfig(direction=direction, window_ms=WINDOW))
    assert judgements[500].is_anomaly is flagged
    assert anomalies(judgements) == ([500] if flagged else [])
    assert judgements[500].lower < judgements[500].expected < judgements[500].upper


def test_level_shift_is_the_new_normal_after_shift_windows() -> None:
    values = noisy(600) + noisy(200, seed=2, level=150.0)
    judgements = run(values)
    assert anomalies(judgements) == list(range(600, 600 + SHIFT_WINDOWS))
    after = judgements[600 + SHIFT_WINDOWS]
    assert after.expected == pytest.approx(150.0, abs=2.0)
    assert not after.is_anomaly


def test_no_band_during_warm_up() -> None:
    values = noisy(60)
    values[40] = 1e6
    judgements = run(values, AnomalyConfig(warmup=50, window_ms=WINDOW))
    assert all(j.expected is None and j.lower is None and j.upper is None
               for j in judgements[:50])
    assert not any(j.is_anomaly for j in judgements[:50])
    assert judgements[50].expected is not None


def test_gaps_in_a_seasonal_series_raise_nothing() -> None:
    rng = random.Random(7)
    kept = [k for k in range(8 * PER_DAY) if rng.random() > 0.3]
    sine = daily_sine(8 * PER_DAY)
    judgements = run([sine[k] for k in kept], ends=[(k + 1) * WINDOW for k in kept])
    assert anomalies(judgements) == []


def test_a_series_back_after_a_silent_week_is_judged() -> None:
    """One window, then nothing for eight days: the daily and weekly profiles have seen a
    whole period without learning a bin; the series goes on (it used to divide by zero)."""
    detector = SeriesDetector(AnomalyConfig(window_ms=60_000, warmup=3))
    detector.observe(60_000, 5.0)
    later = [detector.observe(8 * 86_400_000 + k * 60_000, 5.0 + k % 2) for k in range(1, 6)]
    assert [j.is_anomaly for j in later] == [False] * 5
    assert later[-1].expected is not None


def test_zeros_are_ordinary_values() -> None:
    values = [0.0, 1.0] * 200 + [0.0] * 10 + [9.0]
    judgements = run(values)
    assert anomalies(judgements) == [len(values) - 1]
    assert all(math.isfinite(j.score) for j in judgements)


def test_pickle_mid_stream_gives_identical_judgements() -> None:
    values = daily_sine(3 * PER_DAY)
    values[-20] += 30.0
    detector = SeriesDetector(AnomalyConfig(window_ms=WINDOW, timezone="Europe/Paris"))
    half = len(values) // 2
    for k in range(half):
        detector.observe((k + 1) * WINDOW, values[k])
    clone = pickle.loads(pickle.dumps(detector))
    rest = range(half, len(values))
    assert [detector.observe((k + 1) * WINDOW, values[k]) for k in rest] == [
        clone.observe((k + 1) * WINDOW, values[k]) for k in rest]


def test_runs_are_deterministic() -> None:
    values = daily_sine(2 * PER_DAY)
    assert run(values) == run(values)


def test_learn_false_leaves_the_model_unchanged() -> None:
    detector = SeriesDetector(AnomalyConfig(warmup=20, window_ms=WINDOW))
    for k, value in enumerate(noisy(100)):
        detector.observe((k + 1) * WINDOW, value)
    before = pickle.dumps(detector)
    first = detector.observe(101 * WINDOW, 500.0, learn=False)
    assert pickle.dumps(detector) == before
    assert detector.observe(101 * WINDOW, 500.0, learn=False) == first


def test_accept_makes_the_same_deviation_less_anomalous() -> None:
    values = noisy(700)
    values[500] += 10.0
    values[600] += 10.0

    def second_spike(accept: bool) -> Judgement:
        detector = SeriesDetector(AnomalyConfig(window_ms=WINDOW))
        judgements = []
        for k, value in enumerate(values):
            judgements.append(detector.observe((k + 1) * WINDOW, value))
            if accept and k == 500:
                detector.accept((k + 1) * WINDOW, value)
        assert judgements[500].is_anomaly
        return judgements[600]

    plain, accepted = second_spike(False), second_spike(True)
    assert accepted.score < plain.score
    assert not accepted.is_anomaly
    assert accepted.upper - accepted.lower > plain.upper - plain.lower


def test_outages_during_warm_up_do_not_widen_the_band_afterwards() -> None:
    clean = noisy(500)
    outages = list(clean)
    for k in range(20, 200, 30):  # a drop to zero every 30 windows while warming up
        outages[k] = 0.0
    outages[450] = clean[450] - 10.0
    plain, warmed = run(clean), run(outages)
    assert [j.expected for j in warmed[:200]] == [None] * 200
    width = [j.upper - j.lower for j in (plain[400], warmed[400])]
    assert width[1] == pytest.approx(width[0], rel=0.1)
    assert anomalies(warmed) == [450]


def test_recurring_outages_are_each_caught() -> None:
    """A series that loses 80% of its value for two windows every 60: each outage is an
    incident, not a tail of the series, so the tenth is caught like the first (before,
    each outage raised the records to its own size and the next one of that size passed),
    and nothing after it is flagged (its scores do not linger in the 15- and 60-window
    surprises)."""
    values = noisy(1400, noise=10.0)
    starts = list(range(400, 1400, 60))
    for k in starts:
        values[k] = values[k + 1] = 20.0
    flagged = anomalies(run(values))
    assert [k for k in starts if k in flagged] == starts
    assert set(flagged) <= {k + d for k in starts for d in (0, 1)}


def test_windows_between_recurring_incidents_are_not_flagged() -> None:
    """A series that loses half its value for two windows every 30: the first drop is
    caught, and no window between the drops is flagged. Before a closed run's scores were
    forgotten, the drops kept the 15- and 60-window surprises near their records, the band
    shrank towards nothing and ordinary noise between the drops was flagged. (Later drops of
    the same size are the series' own tail by then: see ``EXTREME``.)"""
    values = noisy(1400, noise=10.0)
    starts = list(range(400, 1400, 30))
    for k in starts:
        values[k] = values[k + 1] = 50.0
    flagged = anomalies(run(values))
    assert starts[0] in flagged
    assert set(flagged) <= {k + d for k in starts for d in (0, 1)}


def test_a_slow_ramp_never_leaves_a_band_of_zero_width() -> None:
    """A ramp the EW level lags behind keeps the 15- and 60-window surprises at their
    records; the band they leave is still at least ``NARROWEST`` scales on each side (it
    used to reach zero width, which any noise leaves)."""
    rng = random.Random(3)
    values = [100 + max(0, k - 600) * 0.5 + rng.gauss(0.0, 5.0) for k in range(1200)]
    widths = [j.upper - j.lower for j in run(values) if j.upper is not None]
    assert min(widths) > 1.0


def test_a_day_of_demo_traffic_teaches_the_daily_shape() -> None:
    """Minute counts following the demo's daily curve (8x from trough to peak) with Poisson
    noise: after one day the daily profile, learnt from the values and centred, predicts
    within the noise, so a channel dropping to 0 at 02:00 or 15:00 is caught on days 2
    and 3, and little else is flagged. When the profile learnt what a fast level left over,
    it modelled that level's lag: the outage at 04:00 passed and ramps were flagged."""
    minute, per_day = 60_000, 1440
    rng = random.Random(5)
    values = []
    for k in range(3 * per_day):
        mean = 1000 * seasonality(int((k + 0.5) * minute) - 8 * 3_600_000)
        values.append(max(0.0, rng.gauss(mean, math.sqrt(mean))))
    outages = [day * per_day + hour * 60 for day, hours in ((1, (2, 4, 7, 15, 21)), (2, (3, 5)))
               for hour in hours]
    for k in outages:
        values[k] = 0.0
    detector = SeriesDetector(AnomalyConfig(window_ms=minute))
    flagged = {k for k, value in enumerate(values)
               if detector.observe((k + 1) * minute, value).is_anomaly}
    assert [k for k in outages if k not in flagged] == []
    assert len({k for k in flagged if k >= per_day} - set(outages)) < 5


def test_spikes_up_do_not_hide_a_drop() -> None:
    """A sum with rare big items spikes up by 9 noise sd every 50 windows; the spikes are
    its upper tail, not its lower one, so a drop of 8 sd is still caught (each side of the
    band keeps its own one-window record; with one record for both, the spikes raised it
    and both drops passed)."""
    values = noisy(1500, noise=5.0)
    for k in range(300, 1400, 50):
        values[k] += 45.0
    drops = [1425, 1475]
    for k in drops:
        values[k] -= 40.0
    flagged = anomalies(run(values))
    assert all(k in flagged for k in drops)


def test_a_burst_above_does_not_narrow_the_band_below() -> None:
    """Ten windows 2.5 sd above the expected value, then one 3 sd below: noise both ways,
    not a shift, so the low window is not flagged (when the longer horizons mixed both
    sides, the burst above narrowed the band below to one spread and flagged it). A drop of
    3 sd that lasts is still caught by the longer horizons, though no window of it leaves
    the one-window band."""
    burst = noisy(1000, noise=5.0)
    for k in range(600, 610):
        burst[k] = 100.0 + 12.5
    burst[610] = 100.0 - 15.0
    assert 610 not in anomalies(run(burst))
    drop = noisy(1000, noise=5.0)
    for k in range(600, 630):
        drop[k] = 100.0 - 15.0
    assert any(600 <= k < 630 for k in anomalies(run(drop)))


def test_poisson_noise_catches_an_outage_at_the_trough() -> None:
    """Minute counts with Poisson noise on the demo's daily curve (44 a minute at the 04:00
    trough, 364 at the 21:00 peak) losing 80% for a minute around the trough. With one
    spread for the whole day the band at the trough reaches down to about 0 and most of
    these drops pass; ``noise: poisson`` scales the spread by sqrt(expected / level), so each
    is caught, and the rest of days 2-4 stays quiet (seeds 11-14: 6 of 6 caught with at
    most 1 other window flagged, against 1-2 of 6 with constant noise)."""
    minute, per_day = 60_000, 1440
    rng = random.Random(11)
    means = [200 * seasonality(int((k + 0.5) * minute) - 8 * 3_600_000)
             for k in range(4 * per_day)]
    values = [max(0.0, round(rng.gauss(mean, math.sqrt(mean)))) for mean in means]
    outages = [day * per_day + hour * 60 + 17 for day in (2, 3) for hour in (3, 4, 5)]
    for k in outages:
        values[k] = round(0.2 * means[k])

    def flagged(noise: str) -> set[int]:
        detector = SeriesDetector(AnomalyConfig(window_ms=minute, noise=noise))
        return {k for k, value in enumerate(values)
                if detector.observe((k + 1) * minute, value).is_anomaly}

    poisson, constant = flagged("poisson"), flagged("constant")
    assert [k for k in outages if k not in poisson] == []
    assert len({k for k in poisson if k >= per_day} - set(outages)) <= 1
    assert len([k for k in outages if k not in constant]) >= 3
