"""The central database restored from a base backup while the pushers keep running.

A base backup (`pg_basebackup -X stream`) is taken while meters write and the pusher pushes;
pushing goes on for a while (every batch of that while acknowledged and its rows shipped past
the cursor); then the central server dies and its data folder is replaced by the backup —
what an operator does after losing the central volume. Everything acknowledged after the backup
is missing from the restored database. ingestd reconnects by itself; its answers name another
database (the server's start time is part of `X-Database-Identity`), so the pusher runs a
reconciliation pass PUSHER_RECONCILE_SETTLE_S later and re-sends the missing rows: in the end
0 rows are lost and none is stored twice.
"""

from __future__ import annotations

import os
import pwd
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from fleetdev.pgcluster import temporary_cluster
from pusher.migrate import apply_migrations as migrate_customer

from tests.chaos.checker import CheckReport, check
from tests.chaos.figures import FIGURES
from tests.chaos.stack import CUSTOMER_CODE, ChaosStack, migrate_central_database

SETTLE_S = 2.0
AFTER_BACKUP_S = 6.0
RECONCILE_ENV = {"PUSHER_RECONCILE_INTERVAL_S": "3600", "PUSHER_RECONCILE_SETTLE_S": str(SETTLE_S)}


def _delivered_rows(lines: list[dict[str, Any]]) -> int:
    return sum(
        int(line.get("rows", 0))
        for line in lines
        if line.get("event") == "batch_delivered" and line.get("resource") == "measurements"
    )


def _owned_by_postgres(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


@pytest.mark.long
def test_restore_from_a_base_backup_loses_nothing_in_the_end(tmp_path: Path) -> None:
    """Rows acknowledged after the base backup are missing once the backup is restored, and
    are all stored again by the pass the changed database identity brings forward; none twice."""
    with (
        temporary_cluster(prefix="fleet-chaos-central-", synchronous_commit="on") as central,
        temporary_cluster(prefix="fleet-chaos-customer-", synchronous_commit="on") as customer,
    ):
        central_dsn = central.create_database("fleet")
        migrate_central_database(central_dsn)
        customer_dsn = customer.create_database("meters")
        migrate_customer(customer_dsn)
        with ChaosStack.around(tmp_path, central, central_dsn, customer, customer_dsn) as stack:
            ingestd = stack.start_ingestd()
            stack.start_writers(threads=2)
            pusher = stack.start_pusher(**RECONCILE_ENV)
            deadline = time.monotonic() + 60
            while not _delivered_rows(pusher.json_lines()) and time.monotonic() < deadline:
                time.sleep(0.2)
            backup = central.datadir.parent / "backup"  # where the postgres user can write
            _owned_by_postgres(backup)
            central._run(
                str(central.bindir / "pg_basebackup"),
                "-h", "127.0.0.1", "-p", str(central.port), "-U", "fleet",
                "-D", str(backup), "-X", "stream", "--no-sync",
            )  # fmt: skip
            shipped_at_backup = _delivered_rows(pusher.json_lines())
            time.sleep(AFTER_BACKUP_S)
            shipped_after = _delivered_rows(pusher.json_lines()) - shipped_at_backup
            central.stop("immediate")
            lost_volume = central.datadir.with_name("data.lost")
            central.datadir.rename(lost_volume)
            backup.rename(central.datadir)
            central.start()
            FIGURES.fault("central_restore_from_base_backup")
            report = stack.drain("central restored from a base backup", timeout_s=90)
            missing = report.lost
            started = time.monotonic()
            final = _reconciled(stack, timeout_s=SETTLE_S + 90)
            repaired_in_s = time.monotonic() - started
            shutil.rmtree(lost_volume, ignore_errors=True)
            assert ingestd.alive and ingestd.starts == 1, "ingestd reconnected by itself"
            assert pusher.alive and pusher.starts == 1
        passes = [line for line in pusher.json_lines() if line.get("event") == "reconciled"]
        restored = sum(int(line.get("rows_restored", 0)) for line in passes)
        FIGURES.notes.append(
            f"central restore from a base backup: rows shipped in the {AFTER_BACKUP_S:.0f}s "
            f"after the backup {shipped_after}, missing after the restore {missing}, re-sent by "
            f"reconciliation {restored} (within {repaired_in_s:.1f}s of the drain), lost in the "
            f"end {final.lost}, duplicated {final.duplicated}"
        )
        print(FIGURES.notes[-1])
        assert missing > 0, "the restored database lacked the rows acknowledged after the backup"
        assert final.lost == 0 and final.duplicated == 0 and final.extra == 0, final.summary()
        assert restored >= missing
        assert any(line.get("event") == "central_database_changed" for line in pusher.json_lines())


def _reconciled(stack: ChaosStack, timeout_s: float) -> CheckReport:
    """Poll (bounded) until nothing committed on the gateway is missing centrally."""
    deadline = time.monotonic() + timeout_s
    report = check(stack.customer_dsn, stack.central_dsn, CUSTOMER_CODE)
    while report.lost and time.monotonic() < deadline:
        time.sleep(0.5)
        report = check(stack.customer_dsn, stack.central_dsn, CUSTOMER_CODE)
    return report
