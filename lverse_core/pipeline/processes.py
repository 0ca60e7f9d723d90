"""The processes a run starts: their peak memory (read from /proc while a notebook runs) and how they are ended
(every kernel's process group, on a deadline or when the runner itself is stopped)."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from lverse_core.hardware import maxrss_mib

PROC = Path("/proc")  # where the memory sampler finds the kernels' high-water marks (Linux only)


def peak_rss_mib() -> float:
    """Peak resident memory (MiB) of this process and of the largest finished child (the notebook kernels)."""
    import resource

    return maxrss_mib(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                          resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))  # KiB on Linux, bytes on macOS


class DescendantPeakRSS:
    """Peak resident memory (MiB) of the processes started under this one while the block runs (a notebook's
    kernel and its DataLoader workers): the largest VmHWM, a process's own high-water mark, of any descendant,
    read from /proc every ``every`` seconds by a thread. Children this process already had when the block began,
    and everything under them (another run in the background), are not counted (``children_now``). Only growth in
    the last interval before a process exits can be missed. ``peak_mib`` stays 0.0 where /proc has no such field
    (not Linux)."""

    def __init__(self, every: float = 0.5):
        import threading

        self.every, self.peak_mib = every, 0.0
        self._before: frozenset[tuple[int, int]] = frozenset()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "DescendantPeakRSS":
        self._before = children_now()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._poll()

    def _poll(self) -> None:
        for pid in _descendants(os.getpid(), self._before):
            try:
                text = (PROC / str(pid) / "status").read_text()
            except OSError:  # exited meanwhile
                continue
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_mib = max(self.peak_mib, round(int(line.split()[1]) / 1024, 1))  # kB


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time in clock ticks after boot) of every live process, from /proc/<pid>/stat;
    {} without /proc."""
    table: dict[int, tuple[int, int]] = {}
    if not PROC.is_dir():
        return table
    for entry in PROC.glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()  # the name in () may hold spaces
            table[int(entry.name)] = (int(fields[1]), int(fields[19]))
        except (OSError, IndexError, ValueError):
            continue
    return table


def children_now(root: int | None = None) -> frozenset[tuple[int, int]]:
    """The children ``root`` (default this process) has now, as (pid, start time): what a block that begins now
    leaves alone with its whole subtree (``_descendants``), so that a deadline or a memory reading of one run
    does not reach another run that the same process started earlier. The start time tells a reused pid apart."""
    root = os.getpid() if root is None else root
    return frozenset((pid, start) for pid, (ppid, start) in _process_table().items() if ppid == root)


def _descendants(root: int, exclude: frozenset[tuple[int, int]] = frozenset()) -> list[int]:
    """Every live process whose parent chain leads to ``root``, without the children of ``root`` in ``exclude``
    (``children_now``) and everything under them (from /proc/<pid>/stat; none without /proc, where the runner
    falls back to the finished children's peak, ``peak_rss_mib``)."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [pid for pid in children.get(root, []) if (pid, table[pid][1]) not in exclude]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def kill_descendants(root: int | None = None, sig: int | None = None,
                     exclude: frozenset[tuple[int, int]] = frozenset()) -> list[int]:
    """Kill every process started under ``root`` (default this one), each in its own process group as a whole,
    except the children in ``exclude`` (``children_now``) and their subtrees.

    Jupyter starts a notebook's kernel in a new session (its own process group), so ending the runner alone (e.g.
    by ``timeout``) leaves the kernel, its DataLoader workers and whatever it holds (a GPU) running. Here every
    descendant's group is signalled with ``killpg`` unless it is the caller's own group, where the processes are
    signalled one by one. Returns the pids found."""
    import signal

    root = os.getpid() if root is None else root
    sig = signal.SIGKILL if sig is None else sig
    pids = _descendants(root, exclude)
    own = os.getpgid(0)
    groups = set()
    for pid in pids:
        try:
            group = os.getpgid(pid)
        except OSError:  # exited meanwhile
            continue
        if group == own:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        else:
            groups.add(group)
    for group in groups:
        with contextlib.suppress(OSError):
            os.killpg(group, sig)
    return pids


class Deadline:
    """A run's wall-clock limit: a thread that, ``seconds`` after the block starts, kills the notebook kernels'
    process groups (``kill_descendants``), so the running notebook fails at once and the run stops cleanly
    (manifest and index written, the notebook recorded as failed by the timeout). A training notebook killed this
    way keeps its last checkpoint, which the next run resumes. Children this process already had when the block
    began are left alone with their subtrees (another run the same process started earlier)."""

    def __init__(self, seconds: float | None):
        import threading

        self.seconds, self.fired = seconds, False
        self._before: frozenset[tuple[int, int]] = frozenset()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True) if seconds else None

    def __enter__(self) -> "Deadline":
        if self._thread is not None:
            self._before = children_now()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        if self._stop.wait(self.seconds):
            return
        self.fired = True
        while True:  # again every half second: a kernel that was still starting is caught too
            kill_descendants(exclude=self._before)
            if self._stop.wait(0.5):
                return
