"""This process's memory as Linux reports it in /proc/self/status (no torch, no host: the benchmark's
worker processes import it too)."""
from pathlib import Path


def proc_status_kib(field: str) -> int:
    """The `field` line (`VmRSS`, `VmHWM`, ...) of /proc/self/status, in KiB. Raises OSError when absent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")
