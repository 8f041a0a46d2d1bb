"""PLC and robot interfaces of the station (Modbus TCP, OPC UA, JSON lines) and their simulators."""
