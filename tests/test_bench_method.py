"""The benchmark's own arithmetic: how a round is cut into runs, how runs are merged, and
how callgrind's counts are read."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg
import pytest

from bench.instructions import read_dumps
from bench.load import WrkResult, _parse, combine, postgres_backend_of
from bench.run import LONGEST_RUN_SECONDS, Config, slices
from tests.conftest import _asyncpg_dsn

WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:8000/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.31ms    1.90ms  16.32ms   72.10%
  Latency Distribution
     50%    5.20ms
     75%    6.07ms
     90%    7.40ms
     99%    9.59ms
  758 requests in 1.00s, 1.19MB read
Requests/sec:    756.98
Transfer/sec:      1.19MB
quantile 0.5 1181
quantile 50.0 5200
quantile 99.0 9585
quantile 99.9 13159
"""


def _run(requests: int, seconds: float, quantiles: dict[float, float]) -> WrkResult:
    return WrkResult(
        requests_per_second=requests / seconds,
        p50_ms=quantiles[50.0],
        p99_ms=quantiles[99.0],
        requests=requests,
        errors=0,
        seconds=seconds,
        quantiles=tuple(sorted(quantiles.items())),
    )


def test_wrk_output_with_the_quantile_script_is_read() -> None:
    run = _parse(WRK_OUTPUT)
    assert (run.requests, run.requests_per_second, run.p50_ms, run.p99_ms) == (
        758,
        756.98,
        5.2,
        9.59,
    )
    assert run.quantiles == ((0.5, 1.181), (50.0, 5.2), (99.0, 9.585), (99.9, 13.159))
    assert run.seconds == pytest.approx(1.0013, abs=1e-4)


def test_one_run_combined_is_itself() -> None:
    run = _run(1000, 1.0, {50.0: 2.0, 99.0: 7.0, 99.9: 9.0})
    alone = combine([run])
    assert (alone.requests_per_second, alone.p50_ms, alone.p99_ms) == (1000.0, 2.0, 7.0)


def test_runs_combine_as_all_their_requests_together() -> None:
    fast = _run(900, 1.0, {50.0: 1.0, 99.0: 2.0, 100.0: 3.0})
    slow = _run(100, 1.0, {50.0: 10.0, 99.0: 20.0, 100.0: 30.0})
    both = combine([fast, slow])
    assert (both.requests, both.requests_per_second) == (1000, 500.0)
    # Half of all requests are at or below 1 ms (450 of 1,000): the median is the next step.
    assert both.p50_ms == 2.0
    # 900 are at or below 3 ms, 950 at or below 10: the 990th request is in the slow run.
    assert both.p99_ms == 20.0


def test_a_round_is_cut_into_runs_long_against_a_requests_latency() -> None:
    config = Config.from_env()
    assert config.connections == 16
    assert slices(5, 3_000, config) == [1, 1, 1, 1, 1]  # 100 turns
    assert slices(5, 320, config) == [1, 1, 1, 1, 1]  # 1,000 turns, Anam
    assert slices(5, 200, config) == [3, 2]
    assert sum(slices(7, 150, config)) == 7
    # 10,000 turns: one run as long as 20 latencies, beyond the round's 5 s, within a bound.
    assert slices(5, 64, config) == [5]
    assert slices(5, 60, config) == [6]
    assert slices(5, 16, config) == [20]
    assert slices(5, 2, config) == [LONGEST_RUN_SECONDS]
    assert slices(60, 2, config) == [60]  # never shorter than the round
    assert slices(5, 0, config) == [5]  # nothing answered: nothing to size the runs by


def test_instruction_counts_are_read_from_callgrinds_labelled_dumps(tmp_path: Path) -> None:
    out = tmp_path / "S.out"
    for number, (label, total) in enumerate((("pg-10-agents-key", 193_420), ("pg-100", 7)), 1):
        (tmp_path / f"S.out.{number}").write_text(
            "# callgrind format\nversion: 1\npart: 1\n\ndesc: I1 cache: \n"
            f"desc: Trigger: dump {label}\n\npositions: line\nevents: Ir\n"
            f"summary: {total}\n\nfn=(1) main\n5 {total}\ntotals: {total}\n"
        )
    out.write_text("# callgrind format\nsummary: 999\n")  # written at exit: no label
    (tmp_path / "B0.out.1").write_text("desc: Trigger: dump other\nsummary: 5\n")
    assert read_dumps(out) == {"pg-10-agents-key": 193_420, "pg-100": 7}


async def test_only_this_machines_backends_of_the_bench_database_are_pinned(
    migrated_postgresql_url: str,
) -> None:
    dsn = _asyncpg_dsn(migrated_postgresql_url)
    database = dsn.rsplit("/", 1)[1]
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        pid = await connection.fetchval("SELECT pg_backend_pid()")
        assert postgres_backend_of(pid, database)
        assert not postgres_backend_of(pid, f"{database}_other")
        assert not postgres_backend_of(os.getpid(), database)  # not a backend at all
    finally:
        await connection.close()
