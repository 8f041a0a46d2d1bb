"""Tests of the PLC interface, simulated PLC, robot and OPC UA server."""
