"""Data-parallel fits on one node: ``train.devices: N`` runs one Lightning fit as N processes
(DDP: gloo on CPU, NCCL on CUDA), each on ``batch_size / N`` windows of every global batch.

Why our own launcher: the job's process must stay rank 0 and be the only one that returns
from the fit, holding the best weights, the per-epoch history and the tracking hook, so that
the stage writes and tracks once. Lightning's launchers do not give that:

- its subprocess launcher re-runs ``sys.argv`` for ranks 1..N-1, i.e. the whole
  ``python -m seqcomp train`` (load, open a tracking run, write the outputs) or, in a test,
  pytest itself;
- ``ddp_spawn`` runs every rank, rank 0 too, in a child and hands back only the weights: the
  history and the tracking hook's calls happen in a process that then exits;
- Slurm's srun starts N copies of the job's command (the first problem again), and
  snakemake-executor-plugin-slurm 2.8.0 starts a non-MPI job's command with ``srun -n1``.

So ranks 1..N-1 are started here (multiprocessing ``spawn``: safe with CUDA, and it pickles
only what the fit needs), run the fit and nothing else, and exit; Lightning sees processes
created externally (its LightningEnvironment reads LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import wait
from typing import Any

from seqcomp.errors import ConfigError

log = logging.getLogger("seqcomp.train")

# How long rank 0 may still take to fail by itself (gloo reports a dead peer at once, NCCL only
# after its timeout) once a worker has died, before the job is ended with status 1.
WORKER_DEATH_GRACE_S = 30.0


def world_size(settings: dict[str, Any]) -> int:
    """Processes of the fit (``train.devices``; a settings dict without the key: one)."""
    return int(settings.get("devices", 1))


def local_batch_size(settings: dict[str, Any], where: str = "train") -> int:
    """Windows per process and step: ``batch_size`` is the global batch, the same quantity for
    any ``devices``, so it must split evenly (``where``: the settings' key path, for the error)."""
    batch, world = settings["batch_size"], world_size(settings)
    if batch % world:
        raise ConfigError(f"{where}.batch_size {batch} is not divisible by {where}.devices {world}: the global "
                          f"batch is split evenly over the processes; use a multiple of {world}",
                          (*where.split("."), "batch_size"))
    return batch // world


def train_shard(perm: list[int], rank: int, world: int) -> list[int]:
    """Rank ``rank``'s part of one epoch's permutation: positions rank, rank + N, ... of its first
    n - n % N entries (N = ``world``).

    Rank r's k-th batch of B/N windows is then every N-th window of the k-th global batch of B
    from position r: together the ranks run exactly the batches one process runs, and every
    rank runs as many batches of equal size as the others (DDP averages gradients over ranks,
    which is the global batch mean only for equal sizes, and a rank with a batch fewer would
    leave the others waiting). The n % N < N windows left over are a different few each epoch.
    """
    usable = len(perm) - len(perm) % world
    return perm[rank:usable:world]


def val_shard(n: int, rank: int, world: int) -> range:
    """A contiguous N-th of the ``n`` validation windows, none repeated or left out: the ranks'
    window-weighted means, summed over ranks (``sync_dist``), are the mean over every window."""
    return range(rank * n // world, (rank + 1) * n // world)


def free_port() -> int:
    """A TCP port nobody listens on now, for the process group's rendezvous on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def ranks(world: int, worker: Callable[[Any], None], payload: Any) -> Iterator[None]:
    """Make this process rank 0 of ``world`` and run ``worker(payload)`` as ranks 1..world-1.

    Inside the block this process's environment says "rank 0 of ``world``"; it is restored
    after. A worker that dies while rank 0 still fits ends the job (status 1) after
    WORKER_DEATH_GRACE_S, rather than leaving rank 0 in a collective until the backend's
    timeout (30 min); if rank 0 fails, the workers are stopped.
    """
    if world == 1:
        yield
        return
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world), "NODE_RANK": "0"}
    ctx = multiprocessing.get_context("spawn")
    # Pickled here, with the standard pickler, which copies tensors: multiprocessing's own would
    # move them into shared memory, and every rank's optimizer would then step the one network.
    data = pickle.dumps(payload)
    procs = [ctx.Process(target=_worker_main, args=(worker, data, {**env, "LOCAL_RANK": str(rank)}),
                         name=f"seqcomp-ddp-rank{rank}", daemon=True) for rank in range(1, world)]
    saved = {k: os.environ.get(k) for k in (*env, "LOCAL_RANK")}
    os.environ.update(env, LOCAL_RANK="0")
    done = threading.Event()
    try:
        for p in procs:
            p.start()
        threading.Thread(target=_watch, args=(procs, done), daemon=True).start()
        yield
        done.set()
        for p in procs:
            p.join(timeout=120)  # their fit ends with rank 0's; then they tear down and exit
    finally:
        done.set()
        for p in procs:
            if p.is_alive():
                p.kill()  # a worker blocked in a collective does not run a SIGTERM handler
                p.join()
        _leave_process_group()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _leave_process_group() -> None:
    """Destroy the fit's process group, which Lightning leaves behind: a later fit in this
    process (a test, a stage that fits twice) would otherwise reuse it, with its ranks gone."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _worker_main(worker: Callable[[Any], None], payload: bytes, env: dict[str, str]) -> None:
    """A spawned rank: its environment, logs at WARNING (rank 0 logs the epochs), the fit."""
    os.environ.update(env)
    logging.basicConfig(level=logging.WARNING, format=f"rank {env['LOCAL_RANK']}: %(levelname)s %(message)s", force=True)
    worker(pickle.loads(payload))


def _watch(procs: list, done: threading.Event) -> None:
    """End the job if a worker exits with an error before rank 0 is done (see :func:`ranks`)."""
    pending = list(procs)
    while pending:
        for sentinel in wait([p.sentinel for p in pending]):
            p = next(q for q in pending if q.sentinel == sentinel)
            pending.remove(p)
            if p.exitcode != 0 and not done.wait(WORKER_DEATH_GRACE_S):
                log.error("DDP worker %s exited with status %s; ending the job", p.name, p.exitcode)
                logging.shutdown()
                os._exit(1)
