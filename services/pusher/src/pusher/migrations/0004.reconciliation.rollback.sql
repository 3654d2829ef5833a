DROP TABLE app.fleet_reconcile_known;
DROP TABLE app.fleet_reconcile_state;
