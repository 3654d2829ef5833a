"""The JSON row the pusher builds in the customer database is the protocol's row."""

from __future__ import annotations

import msgspec
from fleetcore import MeasurementRow
from pusher.source.cursor import ITEM_COLUMNS

from tests.fix_pg import scalar


def test_the_push_item_type_is_the_protocols_measurement_row(customer_db: str) -> None:
    """The attributes of `app.fleet_push_item` (the pusher's migration, whose row_to_json is the
    wire item) are fleetcore's MeasurementRow fields in order, as the item columns are."""
    attributes = scalar(
        customer_db,
        "SELECT array_agg(a.attname::text ORDER BY a.attnum) FROM pg_attribute AS a "
        "WHERE a.attrelid = 'app.fleet_push_item'::regclass AND a.attnum > 0 "
        "AND NOT a.attisdropped",
    )
    fields = [field.encode_name for field in msgspec.structs.fields(MeasurementRow)]
    assert attributes == fields == list(ITEM_COLUMNS)
