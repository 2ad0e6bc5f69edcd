"""One live job per output folder: a job refuses to start while another process holds its folder.

Why: after a killed Snakemake, ``--unlock`` and a rerun, the killed run's jobs may still be
alive (only the main process died). Without this lock the rerun starts the same job again on
the same folder: the second training wipes the first's ``checkpoints/`` (``train.sgd.
resumable_checkpoint``) or resumes from them while the first still writes them, deletes them
under it when it ends (``train.core.discard_checkpoints``), and the two write one model.pt.

The lock is ``<output folder>/.seqcomp.lock`` (a dot-name no rule declares: Snakemake removes a
job's declared outputs before it runs, not other files in their folders). It is an OS record
lock (``fcntl.lockf``), which the kernel, or the NFS lock manager, releases when its holder
dies, however it dies; the file holds the holder's PID, host, job, start time and command, for
the refusal message and ``python -m seqcomp locks``. A file whose lock is free is stale (its
holder ended without removing it: SIGKILL, out of memory, a lost node) and is taken over. On a
file system without OS locks (NFS mounted ``nolock``: ``lockf`` fails with ENOLCK) the file's
content decides: a holder on this host whose PID is gone is stale, any other holder refuses.
Limit: NFS ``nolock`` mounts where ``lockf`` succeeds but locks only on one client exclude jobs
on the same host only (docs/pipeline.md, "Orphaned jobs").

The job's log. Snakemake deletes a job's ``log:`` file before the job's shell starts, and a
shell redirect ``> {log}`` would truncate it: either way a second start would destroy the
first's log before any lock can refuse. So the rules pass ``--log {log}`` and the job opens its
log itself once it holds the lock (:func:`hold_job`, standard output and error both go there,
as with ``> {log} 2>&1``), and keeps a second name of it, ``<folder>/.seqcomp.log``, while it
runs: a refused start puts the holder's log back under its name. Output before the lock is
taken (a broken install, a refusal) goes to the console, or a Slurm job's output file. The
alternative, a lock check in the rule before the redirect, costs a Python start-up (~50 ms here)
per job, is racy (check, then start) and cannot undo Snakemake's deletion of the log. Taking
the lock, opening the log and letting go cost under 1 ms per job, importing this module ~3 ms
(measured on the 2-core reference machine; tests/test_lock.py checks the lock's share).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import struct
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from seqcomp.errors import SeqcompError

LOCK_NAME = ".seqcomp.lock"
LOG_NAME = ".seqcomp.log"  # the holder's log, a hard link while it runs


class JobLocked(SeqcompError):
    """Another live process holds the job's output folder."""


class Holder(NamedTuple):
    """What a lock file says of the process that wrote it."""

    pid: int
    host: str
    job: str
    since: float  # time.time() when it took the lock
    command: str
    log: str | None = None  # absolute path of its log, where it keeps one
    slurm_job: str | None = None

    def alive_here(self) -> bool | None:
        """Whether its PID lives (None: it ran on another host, so this host cannot tell)."""
        if self.host != host_name():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True

    def describe(self, width: int = 200) -> str:
        command = " ".join(self.command.split())  # one line, whatever the command held
        command = command if len(command) <= width else command[: width - 3] + "..."
        return (f"PID {self.pid} on {self.host} (job {self.job}, since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}, "
                f"{age(time.time() - self.since)} ago, command: {command})")

    def how_to_stop(self) -> str:
        ways = [f"`kill {self.pid}`" if self.host == host_name() else f"`ssh {self.host} kill {self.pid}`"]
        if self.slurm_job:
            ways.append(f"`scancel {self.slurm_job}` (its Slurm job)")
        return " or ".join(ways)


def host_name() -> str:
    return os.uname().nodename


def age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def read_holder(path: Path) -> Holder | None:
    """The lock file's holder; None when it is empty (its holder is just starting) or unreadable.
    Not for a file this process locks: closing any descriptor of a file drops the process's
    POSIX locks on it (:func:`_holder_in`)."""
    try:
        return _parse(path.read_bytes())
    except OSError:
        return None


def _holder_in(fd: int) -> Holder | None:
    return _parse(os.pread(fd, 1 << 16, 0))


def _parse(record: bytes) -> Holder | None:
    try:
        return Holder(**json.loads(record))
    except (ValueError, TypeError):
        return None


def _open_locked(path: Path) -> tuple[int, bool]:
    """(fd of the lock file at ``path``, whether the OS locks it); raises BlockingIOError while
    another process holds it. Retries when the holder removed the file between our open and
    our lock (we would hold a lock on a file no one else can find)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os_lock = True
        except OSError as exc:
            if exc.errno != errno.ENOLCK:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise BlockingIOError(exc.errno, exc.strerror) from None
                raise
            os_lock = False
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd, os_lock
        os.close(fd)


def _refusal(folder: Path, holder: Holder | None, os_lock: bool) -> JobLocked:
    if holder is None:
        return JobLocked(f"{folder}: in use by another process that is starting (its lock file {folder / LOCK_NAME} "
                         "is still empty); wait for it, or see `python -m seqcomp locks --results <results folder>`")
    unsure = "" if os_lock else (f"; this file system has no OS locks, so whether it still runs cannot be told from "
                                 f"{host_name()}: if it has ended, delete {folder / LOCK_NAME}")
    return JobLocked(f"{folder}: in use by {holder.describe()}: wait for it to end, or stop it: {holder.how_to_stop()}, "
                     f"then run again{unsure}")


def _stale_note(holder: Holder) -> str:
    alive = holder.alive_here()
    if alive is False:
        return f"took over a stale lock of PID {holder.pid} (dead)"
    if alive is None:
        return f"took over a stale lock of PID {holder.pid} on {holder.host} (its lock was released: it has ended)"
    return f"took over a stale lock of PID {holder.pid} (its lock was released; PID {holder.pid} is now another process)"


def restore_log(folder: Path, holder: Holder | None, log: Path | None) -> bool:
    """Put the holder's log back under its name when Snakemake deleted it for our start (True if done)."""
    kept = folder / LOG_NAME
    if holder is None or log is None or holder.log != str(log.absolute()) or not kept.is_file():
        return False
    if log.exists() and os.path.samefile(log, kept):
        return False
    tmp = log.with_name(f".{log.name}.{os.getpid()}.tmp")
    try:
        os.link(kept, tmp)
        os.replace(tmp, log)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    return True


@contextmanager
def folder_lock(folder: str | Path, job: str, log: str | Path | None = None) -> Iterator[list[str]]:
    """Hold ``folder`` for ``job`` (raises :class:`JobLocked` naming the holder); yields notes
    for the job's log (a stale lock taken over). The lock file goes when the block ends."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    log = Path(log) if log is not None else None
    try:
        fd, os_lock = _open_locked(path)
    except BlockingIOError:
        holder = read_holder(path)
        restore_log(folder, holder, log)
        raise _refusal(folder, holder, os_lock=True) from None
    try:
        previous, notes = _holder_in(fd), []
        if previous is not None and previous.pid != os.getpid():
            if not os_lock and previous.alive_here() is not False:
                restore_log(folder, previous, log)
                raise _refusal(folder, previous, os_lock=False)
            notes.append(_stale_note(previous))
        me = Holder(os.getpid(), host_name(), job, time.time(), shlex.join(sys.orig_argv),
                    str(log.absolute()) if log is not None else None, os.environ.get("SLURM_JOB_ID"))
        record = json.dumps(me._asdict()).encode() + b"\n"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)  # a full disk fails here: the file goes with the block
            yield notes
        finally:
            path.unlink(missing_ok=True)  # while still locked: a waiter that opened it retries (_open_locked)
    finally:
        os.close(fd)


@contextmanager
def hold_job(folder: str | Path, job: str, log: str | Path | None = None) -> Iterator[None]:
    """The job's lock on its output folder, then (with ``log``) its standard output and error
    in ``log``, opened only now that no other process can be writing it; a stale lock taken over
    is said in the log."""
    with folder_lock(folder, job, log) as notes:
        kept = Path(folder) / LOG_NAME
        if log is not None:
            redirect_output(Path(log))
            kept.unlink(missing_ok=True)
            try:
                os.link(log, kept)
            except OSError:  # another file system, or no hard links: a refused start cannot restore the log
                pass
        for note in notes:
            print(f"seqcomp: {note}", file=sys.stderr, flush=True)
        try:
            yield
        finally:
            if log is not None:
                kept.unlink(missing_ok=True)


def redirect_output(log: Path) -> None:
    """Standard output and error (file descriptors 1 and 2, so native code's writes too) to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def lock_state(path: Path) -> str:
    """``held`` (a live process holds the OS lock), ``stale`` or ``unknown`` (no OS lock query
    here: not Linux, or a file system without locks). Asks with F_GETLK, which takes no lock,
    so listing never makes a starting job refuse."""
    if not sys.platform.startswith("linux"):
        return "unknown"
    # Linux's struct flock on 64-bit: short type, short whence, off_t start, off_t len, pid_t pid
    query = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "stale"
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return "unknown"
    finally:
        os.close(fd)
    return "stale" if struct.unpack("hhqqi4x", answer)[0] == fcntl.F_UNLCK else "held"


def list_locks(results: str | Path) -> list[str]:
    """One line per lock file under ``results``: held or stale, PID, host, job, age, folder."""
    lines = []
    for path in sorted(Path(results).rglob(LOCK_NAME)):
        holder, state = read_holder(path), lock_state(path)
        if state == "unknown" and holder is not None and holder.alive_here() is not None:
            state = "held" if holder.alive_here() else "stale"
        if holder is None:
            lines.append(f"{state:7s} (no holder written yet)  {path.parent}")
            continue
        lines.append(f"{state:7s} PID {holder.pid} on {holder.host}  {holder.job}  {age(time.time() - holder.since)}"
                     f"{'  slurm job ' + holder.slurm_job if holder.slurm_job else ''}  {path.parent}")
    return lines
