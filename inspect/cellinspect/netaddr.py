"""Whether an address is this machine only: one check for the API, Modbus and OPC UA servers.

Its own stdlib-only module so that a station serving Modbus without its API does not import
FastAPI and every router (`cellinspect.api`) just to warn about a non-loopback bind.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for "localhost" and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
