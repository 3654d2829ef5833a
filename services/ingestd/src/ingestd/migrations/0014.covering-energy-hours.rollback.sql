ALTER TABLE fleet.energy_hours
    DROP CONSTRAINT energy_hours_pkey,
    ADD CONSTRAINT energy_hours_pkey PRIMARY KEY (customer_id, device_id, bucket);
