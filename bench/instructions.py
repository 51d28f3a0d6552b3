"""Instructions per transcript read, the service (S) against B0, counted by callgrind.

wrk's figures move with the speed of this shared virtual machine, which drifts by tens of
percent from one second to the next; the number of instructions a process executes for the
same work hardly does. Here each application runs in process, in its own valgrind
(``--tool=callgrind``), as it runs under ``transcripts serve``: on uvloop, with the service's
logging (its request line included). 16 concurrent clients read through ASGI
(``bench/asgi.py``), so uvicorn and the load generator, the same for both, are left out.
After a warm-up, the instructions of a fixed number of reads per cell are counted, less those
of an empty count (the hand-over to ``callgrind_control`` at either end), and divided by that
number. The count still moves a little with timing (how many reads one turn of the event loop
finds ready), and it leaves out what instructions cost in time (cache misses, branch
mispredictions, system calls), so it complements the wrk table and does not replace it.

    python -m bench.instructions --side S|B0 --plan FILE    (what each valgrind runs)

``count_instructions`` runs both and reads the counts from callgrind's dumps.
"""

from __future__ import annotations

import argparse
import json
import logging.config
import math
import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvloop
from starlette.types import ASGIApp

from bench.asgi import header_list, read_concurrently
from bench.load import RATE_LIMIT

__all__ = ["InstructionCount", "PlannedCell", "count_instructions", "read_dumps"]

CLIENTS = 16
# Reads counted per cell: enough that a cell costs a few hundred million instructions.
READS = {10: 320, 100: 256, 1_000: 64, 10_000: 16}
# The count of nothing at all: what the hand-over to callgrind_control adds to every count.
FLOOR = "floor"
# Generous: a whole backend's cells take a few minutes under valgrind.
SIDE_TIMEOUT_SECONDS = 3600


@dataclass(frozen=True)
class PlannedCell:
    label: str
    turns: int
    service: tuple[str, dict[str, str]]  # path and headers, for S
    baseline: tuple[str, dict[str, str]]  # the same for B0


@dataclass(frozen=True)
class InstructionCount:
    label: str
    service: float  # instructions per read
    baseline: float


def read_dumps(out_file: Path) -> dict[str, int]:
    """Instructions by dump label, from callgrind's ``<out_file>.N`` dumps (``dump LABEL``)."""
    counts: dict[str, int] = {}
    for dump in sorted(out_file.parent.glob(f"{out_file.name}.*")):
        label = total = None
        with dump.open() as lines:
            for line in lines:  # the header: the counts of every function follow it
                if line.startswith("desc: Trigger: dump "):
                    label = line.removeprefix("desc: Trigger: dump ").strip()
                elif line.startswith("summary: "):
                    total = int(line.split()[1])
                    break
        if label is not None and total is not None:
            counts[label] = total
    return counts


def count_instructions(
    cells: list[PlannedCell],
    *,
    database_url: str,
    jwt_secret: str,
    key_hash: str,
    user_id: int,
    pool: tuple[int, int],
    work_dir: Path,
    cpus: tuple[str, str],
    service_src: str | None = None,
) -> list[InstructionCount]:
    """Run S and B0, each in a valgrind on its own core, and count both over ``cells``.

    ``service_src``: another version's ``src/`` to run S from, as ``BENCH_SERVICE_SRC`` does
    for the wrk table.
    """
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise FileNotFoundError("valgrind (callgrind) is not installed: apt-get install valgrind")
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    plan = work_dir / "plan.json"
    plan.touch(mode=0o600)  # it holds the run's JWT secret
    plan.write_text(
        json.dumps(
            {
                "database_url": database_url,
                "jwt_secret": jwt_secret,
                "key_hash": key_hash,
                "user_id": user_id,
                "pool": pool,
                "cells": [asdict(cell) for cell in cells],
            }
        )
    )
    # Only what the children need: nothing of the caller's PYTHON* or TRANSCRIPTS_* settings,
    # and one hash seed, so that a second run lays out sets and dicts as the first did.
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env["PYTHONHASHSEED"] = "0"
    with ExitStack() as stack:
        processes = {}
        for side, cpu in zip(("S", "B0"), cpus, strict=True):
            log = stack.enter_context((work_dir / f"{side}.log").open("w"))
            side_env = {**env, "PYTHONPATH": service_src} if side == "S" and service_src else env
            process = stack.enter_context(
                subprocess.Popen(
                    [
                        "taskset",
                        "-c",
                        cpu,
                        "valgrind",
                        "--tool=callgrind",
                        "--instr-atstart=no",
                        f"--callgrind-out-file={work_dir / side}.out",
                        sys.executable,
                        "-m",
                        "bench.instructions",
                        "--side",
                        side,
                        "--plan",
                        str(plan),
                    ],
                    cwd=Path(__file__).resolve().parents[1],
                    env=side_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            stack.callback(_stop, process)  # runs first: a failure never leaves one running
            processes[side] = process
        for side, process in processes.items():
            process.wait(timeout=SIDE_TIMEOUT_SECONDS)
            if process.returncode != 0:
                tail = (work_dir / f"{side}.log").read_text()[-3000:]
                raise RuntimeError(f"{side} under callgrind exited {process.returncode}:\n{tail}")
    counts = {side: read_dumps(work_dir / f"{side}.out") for side in ("S", "B0")}
    wanted = [FLOOR, *(cell.label for cell in cells)]
    for side, labelled in counts.items():
        missing = [label for label in wanted if label not in labelled]
        if missing:
            raise RuntimeError(f"{side}: no callgrind dump for {missing}; found {sorted(labelled)}")

    def per_read(side: str, cell: PlannedCell) -> float:
        return (counts[side][cell.label] - counts[side][FLOOR]) / READS[cell.turns]

    return [
        InstructionCount(cell.label, per_read("S", cell), per_read("B0", cell)) for cell in cells
    ]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


# ---------------------------------------------------------------- inside valgrind


def _callgrind(*arguments: str) -> None:
    """Tell this process's callgrind what to do; it has done it when this returns."""
    subprocess.run(
        ["callgrind_control", *arguments, str(os.getpid())],
        check=True,
        capture_output=True,
        # callgrind_control reaches a process blocked in a system call through ptrace: where
        # that is not allowed, it would wait for ever.
        timeout=120,
    )


def _application(side: str, plan: dict[str, Any]) -> ASGIApp:
    from bench.baseline_app import baseline_app
    from transcripts.app import create_app
    from transcripts.observability import LOGGING_CONFIG
    from transcripts.settings import Settings

    logging.config.dictConfig(LOGGING_CONFIG)  # as uvicorn applies it for transcripts serve
    settings = Settings(
        _env_file=None,
        database_url=plan["database_url"],
        jwt_secret=plan["jwt_secret"],
        rate_limit=RATE_LIMIT,
    )
    if side == "S":
        return create_app(settings)
    return baseline_app(
        settings, key_hash=plan["key_hash"], user_id=plan["user_id"], pool=tuple(plan["pool"])
    )


async def _count(side: str, plan: dict[str, Any]) -> None:
    app: Any = _application(side, plan)
    async with app.router.lifespan_context(app):
        state = getattr(app.state, "transcripts", None)  # the service's; B0 has none
        if state is not None:
            # The service records a key's use at most once a minute: under valgrind a minute
            # is a few dozen reads, so that write would weigh a hundred times what it does.
            state.key_usage._interval = math.inf
        for number, cell in enumerate(plan["cells"]):
            path, headers = cell["service" if side == "S" else "baseline"]
            request = (path, header_list(headers))
            # Pools opened, caches warm.
            await read_concurrently(app, *request, 2 * CLIENTS, CLIENTS)
            if state is not None:
                await state.key_usage.drain()
            if number == 0:
                _callgrind("--instr=on")
                _callgrind("--zero")
                _callgrind(f"--dump={FLOOR}")
            _callgrind("--zero")
            await read_concurrently(app, *request, READS[cell["turns"]], CLIENTS)
            _callgrind(f"--dump={cell['label']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", choices=("S", "B0"), required=True)
    parser.add_argument("--plan", type=Path, required=True)
    arguments = parser.parse_args()
    uvloop.run(_count(arguments.side, json.loads(arguments.plan.read_text())))


if __name__ == "__main__":
    main()
