DROP TABLE fleet.storage_conversion;
