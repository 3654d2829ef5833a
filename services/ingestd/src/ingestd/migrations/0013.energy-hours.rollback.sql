DROP TRIGGER hourly_dirty_truncated ON fleet.hourly_dirty;
DROP FUNCTION fleet.energy_hours_forget();
DROP TABLE fleet.energy_frontier;
DROP TABLE fleet.energy_hours;
