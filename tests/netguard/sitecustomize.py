"""Loaded by Python at start-up when this folder is on PYTHONPATH (tests' subprocesses only).

Internet sockets and DNS fail, and every attempt is appended to $NETGUARD_LOG, so a test can assert
that a script never tried the network even when the script swallowed the error.
"""
import os
import socket

_log = os.environ.get("NETGUARD_LOG")
_connect = socket.socket.connect


def _record(what):
    if _log:
        with open(_log, "a") as f:
            f.write(what + "\n")


def _guarded_connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _record(f"connect {address}")
        raise OSError("network blocked by tests/netguard")
    return _connect(self, address)


def _guarded_getaddrinfo(host, *args, **kwargs):
    _record(f"getaddrinfo {host}")
    raise socket.gaierror("network blocked by tests/netguard")


def _guarded_create_connection(address, *args, **kwargs):
    _record(f"create_connection {address}")
    raise OSError("network blocked by tests/netguard")


socket.socket.connect = _guarded_connect
socket.getaddrinfo = _guarded_getaddrinfo
socket.create_connection = _guarded_create_connection
