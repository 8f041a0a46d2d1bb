"""The simulated production line: camera, station, Modbus, PLC, conveyor and gate in one job."""
