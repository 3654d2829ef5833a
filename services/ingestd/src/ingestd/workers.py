"""Serving with several processes on one port (INGESTD_WORKERS), so one replica uses every core.

A pre-fork parent: it opens nothing itself, forks INGESTD_WORKERS workers, and each worker runs
the whole application (its own pool, token listener and housekeeping task) on the same address
with SO_REUSEPORT (`web.run_app(..., reuse_port=True)`): the kernel spreads new connections over
the workers' listening sockets, no balancer of ours in between. Housekeeping takes turns through
its advisory lock, as it does across replicas.

The parent forwards SIGTERM/SIGINT to the workers and waits for them to finish their requests.
If a worker dies on its own, the parent stops the others and exits non-zero, so the supervisor
(systemd, Kubernetes) restarts the replica as a whole instead of running it one core short.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

import structlog

__all__ = ["serve_workers"]

log = structlog.get_logger("ingestd")

_STOP_GRACE_S = 30.0


def serve_workers(count: int, serve_one: Callable[[], None]) -> int:
    """Run `serve_one` (which serves until SIGTERM, with SO_REUSEPORT) in `count` forked workers."""
    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_worker, args=(serve_one,), name=f"ingestd-worker-{i}")
        for i in range(count)
    ]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                os.kill(worker.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for worker in workers:
            worker.start()
        log.info("workers_started", workers=count, pids=[w.pid for w in workers])
        while any(w.exitcode is None for w in workers):
            alive = [w.sentinel for w in workers if w.exitcode is None]
            multiprocessing.connection.wait(alive, timeout=1.0)
            lost = [w for w in workers if w.exitcode is not None]
            if lost and not stopping:
                log.error("worker_exited", pid=lost[0].pid, exitcode=lost[0].exitcode)
                status = 1
                stop(signal.SIGTERM, None)
        for worker in workers:
            worker.join(_STOP_GRACE_S)
            if worker.exitcode is None:
                worker.kill()
                worker.join(5.0)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return status


def _worker(serve_one: Callable[[], None]) -> None:
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_DFL)  # run_app installs its own handlers
    try:
        serve_one()
    except Exception:
        log.exception("worker_failed")
        sys.exit(1)
