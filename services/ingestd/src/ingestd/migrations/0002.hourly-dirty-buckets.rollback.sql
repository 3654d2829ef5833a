DROP TABLE fleet.hourly_dirty;
