"""Memory of a real server process: the resident set (RSS) of it and its children (its gateway processes)."""

from __future__ import annotations

from pathlib import Path


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (the gateway processes of `imaging serve`)."""
    pids = [pid]
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                pids += tree(int(child))
    except FileNotFoundError:  # it (or a thread) ended meanwhile
        pass
    return pids


def tree_rss(pid: int) -> int:
    """Resident memory of the process tree, bytes."""
    total = 0
    for p in tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except FileNotFoundError:
            continue
        line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
        total += int(line.split()[1]) * 1024
    return total
