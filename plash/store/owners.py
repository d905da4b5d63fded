"""Names that record the process that owns them: PID.START.REST, START being the process's start time.

Staging dirs (tmp/NAME) and purge dirs (purge-NAME) are named so; `clean`
reclaims those whose owner is gone, even if its pid was reused since.
"""

from __future__ import annotations

import os


def owned_name(rest: str) -> str:
    """A name owned by this process: PID.START.REST."""
    pid = os.getpid()
    return f"{pid}.{_proc_start_time(pid)}.{rest}"


def token() -> str:
    """A short random string, to make names unique."""
    return os.urandom(4).hex()


def owner_alive(name: str) -> bool:
    """Whether the process recorded in a name (see owned_name) still runs."""
    parts = name.split(".")
    if len(parts) < 3 or not parts[0].isdigit():
        return False
    return _proc_start_time(int(parts[0])) == parts[1]


def _proc_start_time(pid: int) -> str | None:
    """The start time of a process (field 22 of /proc/PID/stat), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None  # a zombie has finished: its temp dirs are reclaimable
    return fields[19].decode()
