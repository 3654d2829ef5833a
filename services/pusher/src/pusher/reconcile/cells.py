"""The cells a pass compares, and how it drills down (docs/PROTOCOL.md, "A pass").

A cell is one device, or every device of the pass, over whole UTC hours. The pass starts with
one cell for the whole horizon and splits only what differs: the horizon into UTC days, a day
into hours, an hour into one cell per device — a leaf, whose rows are re-sent. Digests are
sums over the gateway's (device, hour) buckets, so any cell's digest is a few additions, and
the digest the pass *expects* centrally is the gateway's plus the known differences inside it.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fleetcore.reconcile import CellDigest, DigestCell, add_hash, format_hash

__all__ = ["HOUR", "Cell", "DigestIndex", "HourlyDigests", "ceil_hour", "floor_hour"]

HOUR = timedelta(hours=1)
_ZERO = CellDigest(0, 0)


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floor = floor_hour(moment)
    return floor if floor == moment else floor + HOUR


@dataclass(frozen=True, slots=True, order=True)
class Cell:
    """`hours` whole UTC hours from `start`, of `device` (None: every device of the pass)."""

    start: datetime
    hours: int
    device: int | None = None

    @property
    def end(self) -> datetime:
        return self.start + self.hours * HOUR

    @property
    def leaf(self) -> bool:
        return self.device is not None and self.hours == 1

    def hour_starts(self) -> Iterator[datetime]:
        for i in range(self.hours):
            yield self.start + i * HOUR

    def split(self, devices: Sequence[int]) -> list[Cell]:
        """The cells one level down: days of a longer range, hours of a day, devices of an
        hour."""
        if self.hours == 1:
            return [Cell(self.start, 1, d) for d in devices] if self.device is None else []
        if self.hours > 24 and self.device is None:
            cells: list[Cell] = []
            cut = self.start
            while cut < self.end:
                next_day = (cut + timedelta(days=1)).replace(hour=0)
                stop = min(next_day, self.end)
                cells.append(Cell(cut, int((stop - cut) / HOUR), None))
                cut = stop
            return cells
        return [Cell(h, 1, self.device) for h in self.hour_starts()]

    def on_wire(self, digest: CellDigest) -> DigestCell:
        return DigestCell(
            start=self.start, hours=self.hours, count=digest.count,
            hash=format_hash(digest.hash), device=self.device,
        )  # fmt: skip


class DigestIndex:
    """(device, hour) digests summed per hour over all devices too, so that any cell's digest
    costs one lookup per hour."""

    def __init__(self, buckets: dict[tuple[int, datetime], CellDigest]) -> None:
        self.buckets = buckets
        self.by_hour: dict[datetime, CellDigest] = defaultdict(lambda: _ZERO)
        for (_, hour), digest in buckets.items():
            self.by_hour[hour] = self.by_hour[hour] + digest

    def of(self, cell: Cell) -> CellDigest:
        total = _ZERO
        if cell.device is None:
            for hour in cell.hour_starts():
                if hour in self.by_hour:
                    total = total + self.by_hour[hour]
        else:
            for hour in cell.hour_starts():
                found = self.buckets.get((cell.device, hour))
                if found is not None:
                    total = total + found
        return total


class HourlyDigests:
    """The gateway's own (device, hour) digests over a pass's hours, in arrays: one count and
    one hash sum per device and hour, and their sums over the devices per hour. As a dict of
    Python objects a 90-day horizon of 27 meters (58,320 buckets, each a key tuple, a datetime,
    a digest and its ints) took ~22 MiB at once, every pass, of a pusher meant to stay under
    40 MiB; here it is 16 bytes per device-hour (0.9 MiB), given back after the pass."""

    def __init__(self, devices: Sequence[int], start: datetime, hours: int) -> None:
        self.start, self.hours = start, hours
        self._row = {device: n * hours for n, device in enumerate(devices)}
        self._counts = array("q", bytes(8 * hours * len(devices)))
        self._hashes = array("Q", bytes(8 * hours * len(devices)))
        self._hour_counts = array("q", bytes(8 * hours))
        self._hour_hashes = array("Q", bytes(8 * hours))

    def _hour(self, hour: datetime) -> int | None:
        offset = int((hour - self.start) / HOUR)
        return offset if 0 <= offset < self.hours else None

    def add(self, device: int, hour: datetime, digest: CellDigest) -> None:
        """Add a bucket's digest (a device not of the pass or an hour outside it: ValueError)."""
        offset, row = self._hour(hour), self._row.get(device)
        if offset is None or row is None:
            raise ValueError(f"bucket ({device}, {hour}) is outside the pass")
        at = row + offset
        self._counts[at] += digest.count
        self._hashes[at] = add_hash(self._hashes[at], digest.hash)
        self._hour_counts[offset] += digest.count
        self._hour_hashes[offset] = add_hash(self._hour_hashes[offset], digest.hash)

    def get(self, device: int, hour: datetime) -> CellDigest:
        """The digest of one device-hour (zero where it has no rows)."""
        offset, row = self._hour(hour), self._row.get(device)
        if offset is None or row is None:
            return _ZERO
        return CellDigest(self._counts[row + offset], self._hashes[row + offset])

    def of(self, cell: Cell) -> CellDigest:
        total = _ZERO
        for hour in cell.hour_starts():
            if cell.device is not None:
                total = total + self.get(cell.device, hour)
            elif (offset := self._hour(hour)) is not None:
                total = total + CellDigest(self._hour_counts[offset], self._hour_hashes[offset])
        return total
