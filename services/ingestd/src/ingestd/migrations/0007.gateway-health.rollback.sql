DROP TABLE fleet.device_states;
DROP TABLE fleet.gateway_reports;
DROP TABLE fleet.gateways;
