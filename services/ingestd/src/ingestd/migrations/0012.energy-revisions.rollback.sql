DROP TABLE fleet.energy_revisions;
