"""Central database failover: ingestd on a multi-host DSN (primary, streaming standby,
`target_session_attrs=read-write`) follows the promoted standby without a restart, and the
pusher sees nothing worse than timeouts and 503s meanwhile.

What a failover does depends on the replication mode, shown deterministically: the standby's
WAL receiver is paused, the pusher pushes for a few seconds, then the primary dies and the
standby is promoted.

- asynchronous: ingestd acknowledged the batches of the pause (the primary alone had them),
  the pusher moved its cursor past them, the promoted standby never saw them: right after the
  failover those rows are missing centrally (the test measures how many). ingestd's answers now
  name another database (`X-Database-Identity`: a new timeline and server start), so the
  pusher runs a reconciliation pass PUSHER_RECONCILE_SETTLE_S later and re-sends them: in the
  end 0 rows are lost;
- synchronous (`synchronous_standby_names` naming the standby, `synchronous_commit = on`):
  the commits of the pause wait for the standby, no batch is acknowledged, the pusher keeps its
  cursor and sends them again to the new primary: nothing is missing at any time.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fleetdev.pgcluster import temporary_cluster
from pusher.migrate import apply_migrations as migrate_customer

from tests.chaos.checker import CheckReport, check
from tests.chaos.figures import FIGURES
from tests.chaos.replication import ReplicatedCentral, replicated_central
from tests.chaos.stack import CUSTOMER_CODE, ChaosStack

PAUSE_S = 3.0
SETTLE_S = 2.0
RECONCILE_ENV = {"PUSHER_RECONCILE_INTERVAL_S": "3600", "PUSHER_RECONCILE_SETTLE_S": str(SETTLE_S)}
MEASUREMENT_EVENTS = "SELECT count(*) FROM fleet.ingest_events WHERE batch_type = 'measurements'"


@contextlib.contextmanager
def failover_stack(
    tmp: Path, *, synchronous: bool
) -> Iterator[tuple[ChaosStack, ReplicatedCentral]]:
    """A chaos stack whose centre is a primary with a streaming standby."""
    with (
        replicated_central(synchronous=synchronous) as central,
        temporary_cluster(prefix="fleet-chaos-customer-", synchronous_commit="on") as customer,
    ):
        customer_dsn = customer.create_database("meters")
        migrate_customer(customer_dsn)
        with ChaosStack.around(tmp, central.primary, central.dsn, customer, customer_dsn) as stack:
            yield stack, central


def _delivered(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        line
        for line in lines
        if line.get("event") == "batch_delivered" and line.get("resource") == "measurements"
    ]


def _unanswered(lines: list[dict[str, Any]]) -> int:
    """Measurement batches that got no answer in time (timeouts) among `lines`."""
    return sum(
        1
        for line in lines
        if line.get("event") == "batch_not_delivered"
        and line.get("resource") == "measurements"
        and line.get("status") is None
    )


def _in_flight_at(lines: list[dict[str, Any]], at: int) -> int:
    """1 when the first measurements outcome after line `at` is not a delivery (the batch on
    the wire when the primary died got no answer), else 0: the pusher sends one at a time."""
    for line in lines[at:]:
        if line.get("resource") != "measurements":
            continue
        if line.get("event") == "batch_delivered":
            return 0
        if line.get("event") == "batch_not_delivered":
            return 1
    return 0


def _count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.long
@pytest.mark.parametrize("synchronous", [False, True], ids=["asynchronous", "synchronous"])
def test_failover_loses_nothing_in_the_end(tmp_path: Path, synchronous: bool) -> None:
    """With replication paused, the primary dies and the standby is promoted: ingestd follows
    the new primary without a restart and the pusher sees only timeouts and 503s; with
    asynchronous replication the batches acknowledged during the pause are missing on the new
    primary until the pass the changed database identity brings forward re-sends them, with
    synchronous replication none is ever missing; 0 lost and 0 duplicated in both."""
    mode = "synchronous" if synchronous else "asynchronous"
    with failover_stack(tmp_path, synchronous=synchronous) as (stack, central):
        ingestd = stack.start_ingestd()
        stack.start_writers(threads=2)
        pusher = stack.start_pusher(**RECONCILE_ENV)
        deadline = time.monotonic() + 30
        while not _delivered(pusher.json_lines()) and time.monotonic() < deadline:
            time.sleep(0.2)
        while not central.caught_up() and time.monotonic() < deadline:
            time.sleep(0.1)
        central.pause_replication()
        before = len(_delivered(pusher.json_lines()))
        lines_before = len(pusher.json_lines())
        events_before = _count(central.primary_dsn(), MEASUREMENT_EVENTS)
        time.sleep(PAUSE_S)
        acked = _delivered(pusher.json_lines())[before:]
        unanswered = _unanswered(pusher.json_lines()[lines_before:])
        stored_on_primary = _count(central.primary_dsn(), MEASUREMENT_EVENTS) - events_before
        lines_at_failover = len(pusher.json_lines())
        central.fail_over()
        FIGURES.fault(f"failover_{mode}")
        report = stack.drain(f"failover, {mode} replication", timeout_s=60)
        statuses = sorted(
            {
                line["status"]
                for line in pusher.json_lines()
                if isinstance(line.get("status"), int) and line["status"] != 200
            }
        )
        rows_acked = sum(int(line.get("rows", 0)) for line in acked)
        in_flight = _in_flight_at(pusher.json_lines(), lines_at_failover)
        missing_after_failover = report.lost
        started = time.monotonic()
        final = _reconciled(stack, central, timeout_s=SETTLE_S + 60)
        repaired_in_s = time.monotonic() - started
        passes = [line for line in pusher.json_lines() if line.get("event") == "reconciled"]
        restored = sum(int(line.get("rows_restored", 0)) for line in passes)
        FIGURES.notes.append(
            f"failover ({mode}): batches acknowledged during the {PAUSE_S:.0f}s pause "
            f"{len(acked)} ({rows_acked} rows), unanswered {unanswered}, in flight at the "
            f"failover {in_flight}, audit rows on the old primary only {stored_on_primary}, "
            f"rows missing after the failover {missing_after_failover}, re-sent by "
            f"reconciliation {restored} (within {repaired_in_s:.1f}s of the drain), rows lost in "
            f"the end {final.lost}, duplicated {final.duplicated}; pusher saw statuses {statuses}"
        )
        print(FIGURES.notes[-1])
        assert ingestd.alive and ingestd.starts == 1, "ingestd followed the new primary itself"
        assert pusher.alive and pusher.starts == 1
        assert set(statuses) <= {503}, f"the pusher saw {statuses}"
        assert final.lost == 0 and final.duplicated == 0 and final.extra == 0, final.summary()
        if synchronous:
            assert acked == [], "no batch is acknowledged while the standby cannot confirm it"
            assert missing_after_failover == 0, report.summary()
        else:
            assert acked, "batches were acknowledged while the standby was not receiving"
            assert missing_after_failover == rows_acked, report.summary()
            assert restored == rows_acked, "reconciliation re-sent exactly the rows lost"
            assert any(
                line.get("event") == "central_database_changed" for line in pusher.json_lines()
            )


def _reconciled(stack: ChaosStack, central: ReplicatedCentral, timeout_s: float) -> CheckReport:
    """Poll the new primary (bounded) until nothing committed on the gateway is missing."""
    deadline = time.monotonic() + timeout_s
    report = check(stack.customer_dsn, central.standby_dsn(), CUSTOMER_CODE)
    while report.lost and time.monotonic() < deadline:
        time.sleep(0.5)
        report = check(stack.customer_dsn, central.standby_dsn(), CUSTOMER_CODE)
    return report
