DROP TYPE IF EXISTS app.fleet_push_item;
