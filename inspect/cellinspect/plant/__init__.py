"""Plant level: forwarding from stations to a central store, the hub, live events."""
