"""The job lock (seqcomp.lock): one live process per output folder, stale locks taken over,
the holder's log kept, and Snakemake indifferent to the lock file."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from seqcomp import lock
from seqcomp.lock import LOCK_NAME, JobLocked, folder_lock, list_locks

HOLD = """
import sys, time
from seqcomp.lock import hold_job
with hold_job(sys.argv[1], "train/tiny/lstm/L24-H8/seed0", log=sys.argv[2]):
    print("first job writes", flush=True)
    time.sleep(float(sys.argv[3]))
    print("first job done", flush=True)
"""


def start_holder(folder: Path, log: Path, seconds: float = 60) -> subprocess.Popen:
    """A process holding ``folder`` (its log: ``log``), once its lock file names it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(log), str(seconds)])
    deadline = time.time() + 30
    while time.time() < deadline:
        holder = lock.read_holder(folder / LOCK_NAME)
        if holder is not None and holder.pid == proc.pid and log.is_file() and log.read_text():
            return proc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("the holder never took its lock")


@pytest.fixture
def holder(tmp_path: Path):  # noqa: ANN201
    proc = start_holder(tmp_path / "out", tmp_path / "logs" / "job.log")
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_start_refuses_naming_the_holder(holder: subprocess.Popen, tmp_path: Path) -> None:
    with pytest.raises(JobLocked) as info:
        with folder_lock(tmp_path / "out", "train/tiny/lstm/L24-H8/seed0"):
            pytest.fail("two processes hold one folder")
    message = str(info.value)
    assert "\n" not in message
    assert f"{tmp_path / 'out'}: in use by PID {holder.pid} on {os.uname().nodename}" in message
    assert "job train/tiny/lstm/L24-H8/seed0" in message and "command: " in message and " -c " in message
    assert f"`kill {holder.pid}`" in message


def test_the_refusal_through_the_cli_keeps_the_holders_log(holder: subprocess.Popen, tmp_path: Path) -> None:
    log = tmp_path / "logs" / "job.log"
    log.unlink()  # what Snakemake does to a job's log before the job starts
    spec = json.dumps({"dataset": "tiny"})
    second = subprocess.run([sys.executable, "-m", "seqcomp", "data", "--spec", spec, "--out", str(tmp_path / "out"),
                             "--log", str(log)], capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert f"in use by PID {holder.pid}" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert log.read_text() == "first job writes\n"  # back under its name, and still the holder's file
    holder.send_signal(signal.SIGKILL)
    holder.wait()


def test_a_finished_holder_leaves_nothing_and_its_log_whole(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "job.log"
    start_holder(tmp_path / "out", log, seconds=0.1).wait(timeout=30)
    assert log.read_text() == "first job writes\nfirst job done\n"
    assert list((tmp_path / "out").iterdir()) == []


def test_a_dead_holders_lock_is_taken_over_and_said_in_the_log(tmp_path: Path) -> None:
    folder, log = tmp_path / "out", tmp_path / "logs" / "job.log"
    dead = start_holder(folder, log)
    dead.send_signal(signal.SIGKILL)  # no clean-up: its lock file stays, its OS lock goes
    dead.wait()
    assert (folder / LOCK_NAME).is_file()
    assert list_locks(tmp_path) == [f"stale   PID {dead.pid} on {os.uname().nodename}  train/tiny/lstm/L24-H8/seed0  "
                                    f"{lock.age(time.time() - lock.read_holder(folder / LOCK_NAME).since)}  {folder}"]
    start_holder(folder, log, seconds=0.1).wait(timeout=30)
    assert log.read_text().splitlines() == [f"seqcomp: took over a stale lock of PID {dead.pid} (dead)",
                                            "first job writes", "first job done"]


def test_locks_lists_a_live_holder_as_held(holder: subprocess.Popen, tmp_path: Path) -> None:
    (line,) = list_locks(tmp_path)
    assert line.startswith(f"held    PID {holder.pid} on ") and line.endswith(str(tmp_path / "out"))


def no_os_locks(fd: int, cmd: int) -> None:
    raise OSError(errno.ENOLCK, "No locks available")  # NFS mounted nolock


def leftover(folder: Path, pid: int, host: str) -> None:
    folder.mkdir()
    record = {"pid": pid, "host": host, "job": "train/x", "since": time.time() - 300, "command": "python -m seqcomp train"}
    (folder / LOCK_NAME).write_text(json.dumps(record))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_without_os_locks_a_dead_pid_on_this_host_is_taken_over(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(lock.fcntl, "lockf", no_os_locks)
    pid = dead_pid()
    leftover(tmp_path / "out", pid, os.uname().nodename)
    with folder_lock(tmp_path / "out", "train/x") as notes:
        assert notes == [f"took over a stale lock of PID {pid} (dead)"]
        assert lock.read_holder(tmp_path / "out" / LOCK_NAME).pid == os.getpid()
    assert not (tmp_path / "out" / LOCK_NAME).exists()


@pytest.mark.parametrize("where", ["a live PID here", "another host"])
def test_without_os_locks_a_holder_that_may_live_refuses(tmp_path: Path, monkeypatch, where: str) -> None:  # noqa: ANN001
    monkeypatch.setattr(lock.fcntl, "lockf", no_os_locks)
    host = os.uname().nodename if where == "a live PID here" else "node017"
    leftover(tmp_path / "out", os.getppid(), host)
    with pytest.raises(JobLocked, match=f"in use by PID {os.getppid()} on {host} .*if it has ended, delete "):
        with folder_lock(tmp_path / "out", "train/x"):
            pytest.fail("took over a lock whose holder may live")
    assert lock.read_holder(tmp_path / "out" / LOCK_NAME).pid == os.getppid()  # left as it was


def test_another_hosts_holder_is_stopped_through_ssh_or_its_scheduler() -> None:
    holder = lock.Holder(4242, "node017", "train/x", time.time(), "python -m seqcomp train", None, "123456")
    assert holder.how_to_stop() == "`ssh node017 kill 4242` or `scancel 123456` (its Slurm job)"


def test_taking_the_lock_adds_nothing_noticeable_to_a_jobs_start(tmp_path: Path) -> None:
    """A job starts in ~1.5 s; the lock (and opening the log) must not add a noticeable share."""
    times = []
    for i in range(20):
        start = time.perf_counter()
        with folder_lock(tmp_path / f"out{i}", "train/x"):
            times.append(time.perf_counter() - start)
    assert sorted(times)[10] < 0.01


SNAKEFILE = """
rule job:
    output: "out/{name}.txt"
    shell: "echo done > {output} && echo '{{}}' > out/.seqcomp.lock"
"""


@pytest.mark.slow
def test_snakemake_ignores_a_leftover_lock_file_beside_the_outputs(tmp_path: Path) -> None:
    """A crashed job's lock file in its output folder: no rerun, no warning, and --touch works."""
    (tmp_path / "Snakefile").write_text(textwrap.dedent(SNAKEFILE))
    base = [sys.executable, "-m", "snakemake", "-c1", "--directory", str(tmp_path)]

    def snakemake(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300)

    first = snakemake("out/a.txt")
    assert first.returncode == 0 and (tmp_path / "out" / LOCK_NAME).is_file(), first.stderr
    for args in (("--touch", "out/a.txt"), ("-n", "out/a.txt")):
        result = snakemake(*args)
        assert result.returncode == 0, result.stderr
        assert "seqcomp" not in result.stdout + result.stderr
        assert "Nothing to be done" in result.stdout + result.stderr or "--touch" in args
