"""Scale-out, checkpoint cost and restore after ``kill -9`` of ``kpistream run`` (issue 8).

Each worker is a real ``kpistream run --rules FILE --broker ... --start-from earliest
--metrics-addr 127.0.0.1:PORT`` child process (``KPISTREAM_SESSION_TIMEOUT=6s``, as the tests
use with this broker), its output in ``bench/out/scale-NAME.log``. Every worker runs both
stages: ingest (the source partitions it is assigned in ``KPISTREAM_GROUP_ID``) and, on the
one worker that holds the single partition of ``<group>-panes``, the merge stage.

Setup (shared with ``bench/engine_throughput.py``, whose helpers are imported): an embedded
broker (Tansu, in memory), the 4-partition topic ``bench.orders`` and N (default 500,000)
seeded order events. Every run below uses a fresh consumer group over the same events.

1. **workers**: 1 worker, then 2 workers started together in one fresh group
   (``bench/rules/throughput.yaml``: 10 KPIs by ``[region, channel]``). Every ~20 ms the bench
   scrapes ``kpistream_events_total`` of every worker and sums it. Rate = ``(N - count at the
   first nonzero observation) / (time of the observation that reached N - time of that
   first one)``: group join and start-up are not included. The pair is run ``--repeats``
   times (default 3), alternating 1 and 2 workers; the table gives the median and the range,
   and ratio = median(2 workers) / median(1 worker). Goal: >= 1.7. Caveat, measured not
   hidden: this machine has 2 cores, shared by the broker, the bench's scraping and the
   workers, so 2 workers cannot get 2 cores to themselves; the 1-minute load average when
   each run started is recorded.
2. **checkpoint**: 1 worker with ``KPISTREAM_CHECKPOINT_INTERVAL=0s`` (no checkpoints) and
   with the default ``5s``, alternating, ``--repeats`` times each; rate as above, ratio =
   median(5s) / median(0s). Checkpoints written inside the timed span (from
   ``kpistream_checkpoint_duration_seconds_count``/``_sum``) are reported: the first
   checkpoint is written at the first batch, then every 5 s or more (the daemon stretches the
   interval so that checkpoints take at most 1/20 of the time), so on a short run only a few
   fall inside the timed span.
3. **restore**, for ``series_10k`` (10 KPIs by ``[region, channel, city]``: 10,000 series)
   and ``series_100k`` (by ``[region, channel, store]``: 100,000 series); both have
   ``lateness: 15m``, longer than the events' 10 minutes, so no pane becomes final during the
   run and the state is held by the source slices (each of the 4 partitions holds panes of
   nearly every series and of every minute), a worst case for restore.
   One worker counts all N events; then the bench waits for a checkpoint that covers them:
   whenever ``kpistream_checkpoint_last_timestamp_seconds`` advances it reads the newest
   complete checkpoint of every slice of the group (``source/bench.orders/0..3`` and
   ``merge``) with kpistream's own ``CheckpointStore.load`` (it reads the checkpoint topic by
   the fetch high watermark, never ``end_offsets()``, see shared/BROKER-NOTES.md) until the
   source slices' offsets add up to N and then until the merge slice's offset reaches the
   high watermark of ``<group>-panes`` (read here by a fetch) as it was when they first did
   (idle partitions send a heartbeat marker every few seconds, so that topic keeps growing).
   Checkpoint size = the sum of the value sizes of each slice's newest checkpoint. That load
   (and unpickling each slice) is timed here too: the bench's share of the restore work,
   without any group join.
   Then the worker is killed with SIGKILL and a new worker is started at once in the same
   group. Times are from the new worker's start (wall clock before ``Popen``) to the
   timestamps of its log lines: ``merge stage restored from checkpoint ...`` and ``assigned
   <all 4 partitions> (N restored from checkpoints)``, and to the first ``/readyz`` answering
   200 (polled every 50 ms). They are split with aiokafka's own log lines, per group
   (``<group>`` and ``<group>.merge``): *join* = ``(Re-)joining group`` -> ``Joined group``
   (this broker holds a new member's join for half the 6 s session timeout), *restore* =
   ``Setting newly assigned partitions`` -> the restored line (reading the checkpoint topic,
   unpickling, loading the state). Two seconds after it is ready and merging, the bench reads
   the new worker's ``kpistream_events_total``: events it read again (0 when the checkpoint
   covered all).
   Goal: restore of 100,000 series under 10 s.

Output: a compact table on stdout and every figure in ``bench/out/scale_out.json``.
Options: ``--events N``, ``--scenario workers|checkpoint|restore`` (repeatable; default all),
``--seed S``, ``--repeats R``. About 5-6 minutes on 2 cores with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from engine_throughput import (
    COUNTER,
    KPISTREAM,
    OUT,
    PARTITIONS,
    POLL_S,
    RULES,
    SESSION_TIMEOUT,
    TOPIC,
    _free_port,
    _proc_kib,
    _reap,
    _scrape,
    series_in_state,
    setup,
)

from kpistream.shell.checkpoint import Checkpoint, CheckpointStore
from kpistream.shell.ingest import source_slice
from kpistream.shell.merge import MERGE_SLICE

SCENARIOS = ("workers", "checkpoint", "restore")
THROUGHPUT_RULES = "throughput"
RESTORE_RULES = ("series_10k", "series_100k")
CHECKPOINT_TOPIC = "kpistream-checkpoints"  # the default KPISTREAM_CHECKPOINT_TOPIC
CKPT_COUNT = "kpistream_checkpoint_duration_seconds_count"
CKPT_SUM = "kpistream_checkpoint_duration_seconds_sum"
CKPT_GAUGE = "kpistream_checkpoint_last_timestamp_seconds"
COUNT_DEADLINE_S = 300.0
CHECKPOINT_DEADLINE_S = 180.0
RESTORE_DEADLINE_S = 90.0
READY_POLL_S = 0.05
SETTLE_S = 2.0
GOAL_RATIO = 1.7
GOAL_RESTORE_S = 10.0

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)$")
ASSIGNED = re.compile(r"^assigned (.+) \((\d+) restored from checkpoints\)")


# --- worker processes --------------------------------------------------------------------------


@dataclass
class Child:
    """One ``kpistream run`` process."""

    name: str
    proc: subprocess.Popen
    port: int
    log: Path
    started: float  # time.time() just before Popen

    def get(self, path: str) -> str | None:
        """The body of a 200 answer on ``path``, else None."""
        return _scrape(f"http://127.0.0.1:{self.port}{path}")

    def metrics(self, *names: str) -> str | None:
        return self.get("/metrics?" + "&".join(f"name[]={n}" for n in names))

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")


def start_child(name: str, rules: str, broker_url: str, group: str,
                env: dict[str, str] | None = None) -> Child:
    """Start a worker of ``group`` on ``bench/rules/RULES.yaml``, its output in a log file."""
    port = _free_port()
    argv = [str(KPISTREAM), "run", "--rules", str(RULES / f"{rules}.yaml"),
            "--broker", broker_url, "--start-from", "earliest",
            "--metrics-addr", f"127.0.0.1:{port}"]
    full_env = {**os.environ, "KPISTREAM_GROUP_ID": group,
                "KPISTREAM_SESSION_TIMEOUT": SESSION_TIMEOUT, **(env or {})}
    OUT.mkdir(exist_ok=True)
    log_path = OUT / f"scale-{name}.log"
    with open(log_path, "wb") as log:
        started = time.time()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, env=full_env)
    return Child(name, proc, port, log_path, started)


def stop_children(children: Sequence[Child]) -> tuple[list[int], float]:
    """SIGTERM every child still running, then reap all; exit codes and their CPU seconds."""
    for child in children:
        if child.proc.returncode is None and child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    codes, cpu = [], 0.0
    for child in children:
        code, usage = _reap(child.proc)
        codes.append(code)
        cpu += usage.ru_utime + usage.ru_stime
    return codes, cpu


def _total(text: str, name: str) -> float:
    """The sum of one metric's samples (labelled or not) in exposition text."""
    return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{")))


def new_group(label: str) -> str:
    return f"bench-scale-{label}-{uuid.uuid4().hex[:8]}"


# --- log lines ---------------------------------------------------------------------------------


def log_lines(path: Path) -> list[tuple[float, str]]:
    """``(wall clock, message)`` of each log line of a child (its asctime is local time)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = LOG_LINE.match(line)
        if m:
            stamp = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            out.append((stamp, m[2]))
    return out


def first_line(lines: list[tuple[float, str]], match: Callable[[str], bool]
               ) -> tuple[float, str] | None:
    return next(((t, msg) for t, msg in lines if match(msg)), None)


def assigned_all(message: str) -> bool:
    """An ``assigned ...`` line that lists every source partition."""
    m = ASSIGNED.match(message)
    return bool(m) and m[1].count(f"{TOPIC}/") == PARTITIONS


def last_assignment(lines: list[tuple[float, str]]) -> str:
    found = [m[1] for _, msg in lines if (m := ASSIGNED.match(msg))]
    return found[-1] if found else "never assigned"


def merges(lines: list[tuple[float, str]]) -> bool:
    """Whether the worker's merge stage holds the panes partition at the end of its log."""
    owner = False
    for _, msg in lines:
        if msg.startswith("this worker merges"):
            owner = True
        elif msg.startswith("merging handed over"):
            owner = False
    return owner


# --- counting events ---------------------------------------------------------------------------


@dataclass
class Count:
    events_per_s: float
    seconds: float
    events_timed: int
    at_first: float  # wall clock of the first nonzero observation
    at_last: float  # wall clock of the observation that reached N
    checkpoints: int  # written between the two
    checkpoint_s: float
    first_count_s: dict[str, float]  # per worker: its start to its first nonzero count


def count_events(children: Sequence[Child], n: int) -> Count:
    """Scrape every worker until their ``kpistream_events_total`` add up to ``n``."""
    deadline = time.monotonic() + COUNT_DEADLINE_S
    first: tuple[float, float, float, float] | None = None
    seen: dict[str, float] = {}
    while True:
        for child in children:
            child.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"events not all counted before the deadline; see "
                               f"{', '.join(str(c.log) for c in children)}")
        texts = [child.metrics(COUNTER, CKPT_COUNT, CKPT_SUM) for child in children]
        now = time.time()
        if all(text is not None for text in texts):
            counts = [_total(text, COUNTER) for text in texts]
            for child, count in zip(children, counts, strict=True):
                if count and child.name not in seen:
                    seen[child.name] = now - child.started
            total = sum(counts)
            ckpts = sum(_total(text, CKPT_COUNT) for text in texts)
            ckpt_s = sum(_total(text, CKPT_SUM) for text in texts)
            if total and first is None:
                first = (now, total, ckpts, ckpt_s)
            if total >= n:
                break
        time.sleep(POLL_S)
    assert first is not None
    elapsed = now - first[0]
    timed = int(n - first[1])
    return Count(timed / elapsed if elapsed > 0 else float("nan"), elapsed, timed, first[0],
                 now, int(ckpts - first[2]), ckpt_s - first[3], seen)


def counted_now(children: Sequence[Child]) -> int:
    """Events counted by all ``children`` (read once more, just before stopping them)."""
    texts = [child.metrics(COUNTER) or "" for child in children]
    return int(sum(_total(text, COUNTER) for text in texts))


# --- scenarios 1 and 2: throughput -------------------------------------------------------------


@dataclass
class ThroughputRun:
    label: str
    workers: int
    checkpoint_interval: str
    events_per_s: float
    seconds: float
    events_timed: int
    counted_at_stop: int  # all workers, just before SIGTERM: N unless something counted twice
    checkpoints: int  # written inside the timed span
    checkpoint_s: float
    first_count_s: dict[str, float]
    assigned: dict[str, str]  # per worker: its last "assigned ..." partitions
    merger: list[str]  # the worker(s) whose merge stage held the panes partition at the end
    cpu_s: float  # user + system of all workers over their whole lives
    exit_codes: list[int]
    loadavg: float  # 1-minute load average when the run started
    logs: list[str]


def run_throughput(label: str, broker_url: str, n: int, workers: int,
                   interval: str | None = None) -> ThroughputRun:
    """``workers`` workers started together in a fresh group, counted until ``n``."""
    loadavg = os.getloadavg()[0]
    group = new_group(label)
    env = {} if interval is None else {"KPISTREAM_CHECKPOINT_INTERVAL": interval}
    children = [start_child(f"{label}-w{i + 1}", THROUGHPUT_RULES, broker_url, group, env)
                for i in range(workers)]
    try:
        count = count_events(children, n)
        counted = counted_now(children)
    finally:
        codes, cpu = stop_children(children)
    lines = {c.name: log_lines(c.log) for c in children}
    return ThroughputRun(
        label=label, workers=workers, checkpoint_interval=interval or "5s (default)",
        events_per_s=count.events_per_s, seconds=count.seconds,
        events_timed=count.events_timed, counted_at_stop=counted,
        checkpoints=count.checkpoints, checkpoint_s=count.checkpoint_s,
        first_count_s=count.first_count_s,
        assigned={name: last_assignment(ls) for name, ls in lines.items()},
        merger=[name for name, ls in lines.items() if merges(ls)],
        cpu_s=cpu, exit_codes=codes, loadavg=loadavg, logs=[str(c.log) for c in children])


def run_pairs(pairs: Sequence[tuple[str, int, str | None]], broker_url: str, n: int,
              repeats: int) -> dict[str, list[ThroughputRun]]:
    """Each ``(label, workers, interval)`` ``repeats`` times, alternating between them."""
    runs: dict[str, list[ThroughputRun]] = {label: [] for label, _, _ in pairs}
    for i in range(repeats):
        for label, workers, interval in pairs:
            run = run_throughput(f"{label}-{i + 1}", broker_url, n, workers, interval)
            runs[label].append(run)
            print(f"  {run.label}: {run.events_per_s:,.0f} events/s over {run.seconds:.2f} s "
                  f"(load {run.loadavg:.2f})", flush=True)
    return runs


def summary(runs: list[ThroughputRun]) -> dict:
    rates = [r.events_per_s for r in runs]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates),
            "rates": rates, "cpu_s_median": statistics.median(r.cpu_s for r in runs),
            "checkpoints": [r.checkpoints for r in runs],
            "counted_at_stop": [r.counted_at_stop for r in runs],
            "loadavg": [r.loadavg for r in runs], "runs": [asdict(r) for r in runs]}


# --- scenario 3: restore after kill -9 ---------------------------------------------------------


def slice_names() -> list[str]:
    return [source_slice(TopicPartition(TOPIC, p)) for p in range(PARTITIONS)] + [MERGE_SLICE]


async def high_watermark(bootstrap: str, topic: str) -> int:
    """Partition 0's end as a fetch reports it (ListOffsets is wrong on this broker)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + 30
        while (high := consumer.highwater(tp)) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no fetch answer for {topic}")
            await consumer.getmany(tp, timeout_ms=200, max_records=1)
        return high
    finally:
        await consumer.stop()


@dataclass
class Loaded:
    found: dict[str, Checkpoint]
    load_s: float  # CheckpointStore.load of every slice, in the bench process
    panes_high: int


def load_checkpoints(loop: asyncio.AbstractEventLoop, bootstrap: str, group: str) -> Loaded:
    store = CheckpointStore(bootstrap, CHECKPOINT_TOPIC, group)
    started = time.perf_counter()
    found = loop.run_until_complete(store.load(slice_names()))
    load_s = time.perf_counter() - started
    high = loop.run_until_complete(high_watermark(bootstrap, f"{group}-panes"))
    return Loaded(found, load_s, high)


def sources_cover(loaded: Loaded, n: int) -> bool:
    """Whether the newest source slices' offsets cover all ``n`` events."""
    sources = [loaded.found.get(name) for name in slice_names()[:-1]]
    return sum(offset for cp in sources if cp for offset in cp.offsets.values()) == n


def merge_offset(loaded: Loaded) -> int:
    """The panes topic offset the newest merge checkpoint covers (-1: none yet)."""
    merge = loaded.found.get(MERGE_SLICE)
    return -1 if merge is None else max(merge.offsets.values(), default=-1)


def wait_for_checkpoint(child: Child, loop: asyncio.AbstractEventLoop, bootstrap: str,
                        group: str, n: int, since: float) -> Loaded:
    """Each time the checkpoint gauge advances past ``since``, read the group's newest
    checkpoints, until the source slices cover every event and the merge slice covers every
    pane that was on the broker when they first did (idle partitions keep sending heartbeat
    markers, so the panes topic keeps growing)."""
    deadline = time.monotonic() + CHECKPOINT_DEADLINE_S
    seen = since
    loaded, target = None, None
    while time.monotonic() < deadline:
        child.check_alive()
        text = child.metrics(CKPT_GAUGE)
        stamp = _total(text, CKPT_GAUGE) if text else 0.0
        if stamp > seen:
            seen = stamp
            loaded = load_checkpoints(loop, bootstrap, group)
            if target is None and sources_cover(loaded, n):
                target = loaded.panes_high
            if target is not None and merge_offset(loaded) >= target:
                return loaded
        time.sleep(0.2)
    raise RuntimeError(f"no checkpoint covering all {n} events within "
                       f"{CHECKPOINT_DEADLINE_S:.0f} s (gauge {seen:.3f}, last event counted at "
                       f"{since:.3f}; merge offset wanted {target}; newest read: "
                       f"{describe(loaded)}); see {child.log}")


def describe(loaded: Loaded | None) -> str:
    """The offsets of the newest checkpoints read, for an error message."""
    if loaded is None:
        return "none, the gauge never advanced"
    slices = ", ".join(f"{name} {cp.id} {sorted(cp.offsets.values())}"
                       for name, cp in sorted(loaded.found.items()))
    return f"{slices or 'no slice'}; panes high watermark {loaded.panes_high}"


def unpickle_s(found: dict[str, Checkpoint]) -> float:
    """Seconds to unpickle every slice (what a restoring worker does before loading it)."""
    started = time.perf_counter()
    for checkpoint in found.values():
        pickle.loads(checkpoint.state)
    return time.perf_counter() - started


@dataclass
class Timeline:
    """Seconds from a new worker's start to each step of its take-over (None: never seen)."""

    merge_join_asked: float | None  # "(Re-)joining group G.merge"
    merge_joined: float | None  # "Joined group 'G.merge' ..." (the broker holds a join)
    merge_given: float | None  # "Setting newly assigned partitions ... for group G.merge"
    merge_restored: float | None  # "merge stage restored from checkpoint ..."
    merging: float | None  # "this worker merges the panes of every partition"
    ingest_join_asked: float | None
    ingest_joined: float | None
    ingest_given: float | None
    consuming: float | None  # "consuming bench.orders from ..." (after the join)
    assigned: float | None  # "assigned <all 4> (N restored from checkpoints)"
    ready: float | None  # the first 200 from /readyz
    assigned_line: str


def timeline(child: Child, group: str, ready_at: float | None) -> Timeline:
    lines = log_lines(child.log)

    def at(match: Callable[[str], bool]) -> float | None:
        found = first_line(lines, match)
        return None if found is None else found[0] - child.started

    def group_steps(g: str) -> tuple[float | None, float | None, float | None]:
        return (at(lambda m: m == f"(Re-)joining group {g}"),
                at(lambda m: m.startswith(f"Joined group '{g}' ")),
                at(lambda m: m.startswith("Setting newly assigned") and
                   m.endswith(f" for group {g}")))

    assigned = first_line(lines, assigned_all)
    return Timeline(
        *group_steps(f"{group}.merge"),
        merge_restored=at(lambda m: m.startswith("merge stage restored from checkpoint")),
        merging=at(lambda m: m.startswith("this worker merges")),
        ingest_join_asked=group_steps(group)[0], ingest_joined=group_steps(group)[1],
        ingest_given=group_steps(group)[2], consuming=at(lambda m: m.startswith("consuming ")),
        assigned=at(assigned_all),
        ready=None if ready_at is None else ready_at - child.started,
        assigned_line=assigned[1] if assigned else last_assignment(lines))


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


@dataclass
class RestoreRun:
    rules: str
    series: int
    events_per_s: float  # the first worker's rate, for reference
    checkpoint_wait_s: float  # from the last event counted to a covering checkpoint read
    slice_bytes: dict[str, int]
    source_bytes: int
    merge_bytes: int
    bench_load_s: float
    bench_unpickle_s: float
    old_checkpoints: int  # written by the killed worker (ingest and merge) in its life
    old_checkpoint_s: float  # their total duration
    kill_to_start_s: float
    steps: Timeline
    reread_events: int
    peak_rss_mib: float  # VmHWM of the new worker
    exit_codes: list[int]
    loadavg: float
    logs: list[str]

    @property
    def ingest_join_s(self) -> float | None:
        return _gap(self.steps.ingest_join_asked, self.steps.ingest_joined)

    @property
    def ingest_restore_s(self) -> float | None:
        """From being given the partitions to the "assigned ... restored" line."""
        return _gap(self.steps.ingest_given, self.steps.assigned)

    @property
    def merge_join_s(self) -> float | None:
        return _gap(self.steps.merge_join_asked, self.steps.merge_joined)

    @property
    def merge_restore_s(self) -> float | None:
        return _gap(self.steps.merge_given, self.steps.merge_restored)


def run_restore(rules: str, series: int, loop: asyncio.AbstractEventLoop, broker_url: str,
                bootstrap: str, n: int) -> RestoreRun:
    """One worker counts everything and checkpoints it; kill -9; a new worker takes over."""
    loadavg = os.getloadavg()[0]
    group = new_group(rules)
    old = start_child(f"restore-{rules}-old", rules, broker_url, group)
    try:
        count = count_events([old], n)
        loaded = wait_for_checkpoint(old, loop, bootstrap, group, n, count.at_last)
        checkpointed = time.time()
        stats = old.metrics(CKPT_COUNT, CKPT_SUM) or ""
    finally:
        old.proc.send_signal(signal.SIGKILL)
        old_code, _ = _reap(old.proc)
    new = start_child(f"restore-{rules}-new", rules, broker_url, group)
    try:
        ready_at = watch_restore(new)
        time.sleep(SETTLE_S)
        reread = counted_now([new])
        peak = _proc_kib(new.proc.pid, "VmHWM") / 1024
    finally:
        new_codes, _ = stop_children([new])
    sizes = {name: len(cp.state) for name, cp in loaded.found.items()}
    return RestoreRun(
        rules=rules, series=series, events_per_s=count.events_per_s,
        checkpoint_wait_s=checkpointed - count.at_last, slice_bytes=sizes,
        source_bytes=sum(v for k, v in sizes.items() if k != MERGE_SLICE),
        merge_bytes=sizes.get(MERGE_SLICE, 0), bench_load_s=loaded.load_s,
        bench_unpickle_s=unpickle_s(loaded.found), old_checkpoints=int(_total(stats, CKPT_COUNT)),
        old_checkpoint_s=_total(stats, CKPT_SUM), kill_to_start_s=new.started - checkpointed,
        steps=timeline(new, group, ready_at), reread_events=reread, peak_rss_mib=peak,
        exit_codes=[old_code, *new_codes], loadavg=loadavg,
        logs=[str(old.log), str(new.log)])


def restore_figures(run: RestoreRun) -> dict:
    return {**asdict(run), "ingest_join_s": run.ingest_join_s,
            "ingest_restore_s": run.ingest_restore_s, "merge_join_s": run.merge_join_s,
            "merge_restore_s": run.merge_restore_s}


def watch_restore(child: Child) -> float | None:
    """Poll ``/readyz`` and the log until ready, restored and merging (or the deadline);
    the wall clock of the first 200 from ``/readyz``."""
    deadline = time.monotonic() + RESTORE_DEADLINE_S
    ready_at = None
    while time.monotonic() < deadline:
        child.check_alive()
        if ready_at is None and child.get("/readyz") is not None:
            ready_at = time.time()
        lines = log_lines(child.log)
        if (ready_at is not None and first_line(lines, assigned_all)
                and first_line(lines, lambda m: m.startswith("this worker merges"))):
            break
        time.sleep(READY_POLL_S)
    return ready_at


# --- report ------------------------------------------------------------------------------------


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}s"


def _mib(size: int) -> str:
    return f"{size / 2**20:.2f}MiB"


def print_rates(title: str, rows: list[tuple[str, dict]], ratio_text: str) -> None:
    print(title)
    head = (f"  {'':<31} {'events/s':>9} {'min':>9} {'max':>9} {'CPU s':>6} {'ckpts':>9} "
            f"{'counted at stop':>22} {'load':>14}")
    print(head)
    for name, s in rows:
        counted = ",".join(f"{c:,}" for c in sorted(set(s["counted_at_stop"])))
        ckpts = ",".join(map(str, s["checkpoints"]))
        load = ",".join(f"{x:.1f}" for x in s["loadavg"])
        print(f"  {name:<31} {s['median']:>9,.0f} {s['min']:>9,.0f} {s['max']:>9,.0f} "
              f"{s['cpu_s_median']:>6.1f} {ckpts:>9} {counted:>22} {load:>14}")
    print(f"  {ratio_text}")


def print_restores(runs: list[RestoreRun]) -> None:
    print("restore after kill -9: times from the new worker's start (its log lines' stamps)")
    head = (f"  {'rules':<12} {'series':>7} {'ckpt source':>11} {'merge':>7} "
            f"{'merge rst':>9} {'assigned':>8} {'/readyz':>8} {'| join':>7} {'restore':>7} "
            f"{'m.join':>7} {'m.rst':>6} {'| bench rd':>10} {'unpickle':>8} {'re-read':>7} "
            f"{'RSS':>7}")
    print(head)
    for r in runs:
        t = r.steps
        print(f"  {r.rules:<12} {r.series:>7,} {_mib(r.source_bytes):>11} "
              f"{_mib(r.merge_bytes):>7} {_secs(t.merge_restored):>9} {_secs(t.assigned):>8} "
              f"{_secs(t.ready):>8} {_secs(r.ingest_join_s):>7} {_secs(r.ingest_restore_s):>7} "
              f"{_secs(r.merge_join_s):>7} {_secs(r.merge_restore_s):>6} "
              f"{r.bench_load_s:>9.2f}s {r.bench_unpickle_s:>7.2f}s {r.reread_events:>7,} "
              f"{r.peak_rss_mib:>4.0f}MiB")
        mean = r.old_checkpoint_s / r.old_checkpoints if r.old_checkpoints else float("nan")
        print(f"    {t.assigned_line}; load {r.loadavg:.2f}")
        print(f"    first worker: {r.events_per_s:,.0f} events/s, {r.old_checkpoints} checkpoints "
              f"(ingest + merge) taking {mean:.2f} s on average; a checkpoint covering all "
              f"events was read {r.checkpoint_wait_s:.1f} s after the last one was counted")
        if t.ready is not None and t.assigned is not None and t.ready < t.assigned:
            print(f"    note: /readyz answered 200 {t.assigned - t.ready:.2f} s before the "
                  "source partitions' restore was logged")
    print(f"  goal: restore of 100,000 series under {GOAL_RESTORE_S:.0f} s. merge rst / "
          "assigned = merge stage / all 4 source partitions restored; join = ingest JoinGroup "
          "asked -> joined (the broker holds it); restore = partitions given -> restored; "
          "m.join, m.rst = the same for the merge group; bench rd, unpickle = the same "
          "checkpoints read with CheckpointStore.load and unpickled by the bench; re-read = "
          f"events the new worker counted (within {SETTLE_S:.0f} s of being ready)")


def report(info: dict, workers: dict, checkpoint: dict, restores: list[RestoreRun]) -> dict:
    n = info["events"]
    print(f"{n:,} events ({info['bytes'] / n:.0f} B each), {PARTITIONS} partitions, "
          f"{info['cpus']} CPUs; load average (1 min) {info['loadavg_start']:.2f} at start -> "
          f"{os.getloadavg()[0]:.2f} at end")
    figures: dict = {"setup": {**info, "loadavg_end": os.getloadavg()[0]},
                     "goal": {"ratio_2_to_1_min": GOAL_RATIO, "restore_100k_s_max": GOAL_RESTORE_S}}
    if workers:
        one, two = summary(workers["1w"]), summary(workers["2w"])
        ratio = two["median"] / one["median"]
        print_rates(f"scale-out ({THROUGHPUT_RULES}.yaml, median of {len(one['rates'])} runs)",
                    [("1 worker", one), ("2 workers (one group)", two)],
                    f"ratio 2 workers / 1 worker: {ratio:.3f} (goal >= {GOAL_RATIO})")
        figures["workers"] = {"1": one, "2": two, "ratio": ratio}
    if checkpoint:
        off, on = summary(checkpoint["ckpt0s"]), summary(checkpoint["ckpt5s"])
        ratio = on["median"] / off["median"]
        print_rates(f"checkpoint cost (1 worker, median of {len(off['rates'])} runs)",
                    [("checkpoints off (0s)", off), ("checkpoints every 5s (default)", on)],
                    f"ratio 5s / 0s: {ratio:.3f}")
        figures["checkpoint"] = {"0s": off, "5s": on, "ratio": ratio}
    if restores:
        print_restores(restores)
        figures["restore"] = [restore_figures(r) for r in restores]
    print("ckpts = checkpoints written inside each run's timed span; counted at stop = events "
          "counted by all workers just before SIGTERM; load = 1-min load average at each run's "
          "start")
    return figures


# --- main --------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--seed", type=int, default=20240603)
    parser.add_argument("--scenario", action="append", choices=SCENARIOS,
                        help="run only these scenarios (default: all)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of each throughput configuration (3)")
    args = parser.parse_args()
    scenarios = args.scenario or SCENARIOS
    loop = asyncio.new_event_loop()
    broker, info, lines = loop.run_until_complete(setup(args.events, args.seed))
    series = {r: series_in_state(r, lines) for r in RESTORE_RULES} if "restore" in scenarios else {}
    del lines
    workers, checkpoint, restores = {}, {}, []
    try:
        if "workers" in scenarios:
            print("workers:", flush=True)
            workers = run_pairs([("1w", 1, None), ("2w", 2, None)],
                                broker.url, args.events, args.repeats)
        if "checkpoint" in scenarios:
            print("checkpoint:", flush=True)
            checkpoint = run_pairs([("ckpt0s", 1, "0s"), ("ckpt5s", 1, None)],
                                   broker.url, args.events, args.repeats)
        if "restore" in scenarios:
            print("restore:", flush=True)
            for rules in RESTORE_RULES:
                restores.append(run_restore(rules, series[rules], loop, broker.url,
                                            broker.bootstrap, args.events))
                print(f"  {rules}: ready {_secs(restores[-1].steps.ready)}", flush=True)
    finally:
        loop.run_until_complete(broker.stop())
        loop.close()
    figures = report(info, workers, checkpoint, restores)
    OUT.mkdir(exist_ok=True)
    (OUT / "scale_out.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures: {OUT / 'scale_out.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
