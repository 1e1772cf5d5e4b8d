r"""The independent jobs of a reproduction step, where they run, and their stored results (issue #15).

A step (:mod:`.steps`) splits its work into :class:`Job` s -- one network's training, one
network's class-pair bounds for one method, one network's per-image certificates, one
(network, ``tau``) stAdv attack -- and hands them to :func:`run_jobs`, which runs them on an
:class:`Executor`:

* a local process pool (:class:`LocalPool`, the default: one single-threaded process per core;
  ``workers=1`` runs the jobs one after the other in this process), or
* a Dask cluster (:class:`DaskPool`, ``stadv reproduce --dask-scheduler ADDRESS``; the optional
  ``[dask]`` extra). Its workers must see the same files (data, model cache, output directory).

Every job runs under :func:`stadv_ref.attacks.engine.core_limit` ``(1)`` (one BLAS and Numba thread,
one stAdv worker) with the run's backend, so its numbers do not depend on where it runs or how many
jobs share the machine: a pool, a Dask cluster and ``workers=1`` give the same bits.

Each finished job's result is written at once to ``<out>/<step>/jobs/<key>.json`` (sealed, with
the job's function, its arguments and :func:`code_fingerprint`); the step reads every result back from
there. A run killed with ``kill -9`` and started again therefore continues from the last finished
job, with the same numbers as an uninterrupted run. A stored result made by other arguments or by
other code (the library's or the backend's sources changed since), or damaged, is recomputed (with a
warning when damaged).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import math
import multiprocessing
import os
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .._io import _jsonable, atomic_write_sealed_json, read_sealed_json
from ..attacks.engine import core_limit, default_workers
from ..backend import _entry_points, current_backend_name, use_backend

__all__ = ["Job", "Executor", "LocalPool", "DaskPool", "make_executor", "run_job", "run_jobs", "code_fingerprint",
           "JOB_VERSION"]

JOB_VERSION = 1
"""``format_version`` of the stored job results."""

DASK_HINT = ('--dask-scheduler needs dask.distributed: from a checkout `pip install -e ".[dask]"`, '
             'otherwise `pip install "dask[distributed]"`')


@dataclass(frozen=True)
class Job:
    """One independent piece of a step: ``fn(**kwargs)`` returns a JSON-able dict.

    ``fn`` is a module-level function (so that another process can import it); ``key`` names the
    job within its step (it is the result's file name); ``cost`` orders the jobs, costliest first.
    """

    key: str
    fn: object
    kwargs: dict = field(default_factory=dict)
    cost: float = 1.0
    code: str | None = None

    def spec(self):
        """What the job computes: its function's path, its arguments and (set by :func:`run_jobs`) the
        :func:`code_fingerprint` of the sources that compute it (stored beside the result)."""
        spec = {"fn": f"{self.fn.__module__}.{self.fn.__qualname__}", "kwargs": _jsonable(self.kwargs)}
        return spec if self.code is None else {**spec, "code": self.code}


def _sources_sha256(roots):
    """sha256 of every ``.py`` file under ``roots`` (relative path and bytes, in sorted order)."""
    h = hashlib.sha256()
    for root in roots:
        root = Path(root)
        for path in sorted(root.rglob("*.py")):
            h.update(f"{root.name}/{path.relative_to(root).as_posix()}".encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def code_fingerprint(backend="numpy"):
    """sha256 of the Python sources that compute a result: the ``stadv_ref`` package and, for a plugin
    backend, its package (found from its entry point, not imported).

    It is part of every stored job and step marker, so a run resumed after the code changed (or with
    another backend) computes its steps and jobs again instead of mixing numbers of two versions. Any
    change to those sources counts (a docstring too): the safe side. Not covered: the trained networks
    (``OUT/models`` or ``--cache-dir``) and the class-pair bound cache (``OUT/bound-cache``) are files
    reused by name and settings; delete them after a change to training or to the bounds.
    """
    roots = [Path(__file__).resolve().parents[1]]
    ep = _entry_points().get(backend) if backend != "numpy" else None
    if ep is not None:
        spec = importlib.util.find_spec(ep.module.split(".")[0])
        if spec is not None:
            roots += list(spec.submodule_search_locations or [Path(spec.origin).parent])
    return _sources_sha256(roots)


def run_job(fn, kwargs, backend):
    """Run ``fn(**kwargs)`` with ``backend`` under ``core_limit(1)``; the JSON-able result, its seconds and
    the :func:`code_fingerprint` of the process that ran it."""
    t0, c0 = time.perf_counter(), time.process_time()
    with use_backend(backend):
        with core_limit(1):
            result = _jsonable(fn(**kwargs))
    return {"result": result, "seconds": round(time.perf_counter() - t0, 3),
            "cpu_seconds": round(time.process_time() - c0, 3), "pid": os.getpid(), "code": code_fingerprint(backend)}


def _watch_parent(parent):
    """In a pool process: exit when the process that started the pool is gone (``kill -9``)."""
    def loop():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=loop, daemon=True).start()


class Executor:
    """Where the jobs run: ``submit(job, backend) -> Future``, ``wait_any(futures) -> done set``."""

    name = "executor"
    workers = 1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        pass

    def describe(self):
        return {"executor": self.name, "workers": self.workers}


class LocalPool(Executor):
    """A pool of ``workers`` processes on this machine (``None``: one per core); ``1``: in this process."""

    name = "local"

    def __init__(self, workers=None):
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self._pool = None

    def submit(self, job, backend):
        if self.workers == 1:
            fut = Future()
            try:
                fut.set_result(run_job(job.fn, job.kwargs, backend))
            except BaseException as exc:  # the step re-raises it
                fut.set_exception(exc)
            return fut
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_watch_parent, initargs=(os.getpid(),))
        return self._pool.submit(run_job, job.fn, job.kwargs, backend)

    @staticmethod
    def wait_any(futures):
        return wait(futures, return_when=FIRST_COMPLETED).done

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class DaskPool(Executor):
    """The workers of a Dask cluster: ``scheduler`` is its address (``tcp://host:8786``) or a
    ``distributed.Client``. Each job is one task; the cluster's workers need the same files."""

    name = "dask"

    def __init__(self, scheduler):
        try:
            import distributed
        except ImportError as exc:
            raise ImportError(DASK_HINT) from exc
        self._distributed = distributed
        self._own = not isinstance(scheduler, distributed.Client)
        if self._own and not isinstance(scheduler, str):
            raise TypeError(f"dask_scheduler must be an address string or a distributed.Client, "
                            f"got {type(scheduler).__name__}")
        try:
            self.client = distributed.Client(scheduler, timeout="20s") if self._own else scheduler
        except OSError as exc:
            raise ValueError(f"cannot reach the Dask scheduler {scheduler!r}: {exc}") from exc
        self.workers = max(1, sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values()))
        self.address = self.client.scheduler.address

    def submit(self, job, backend):
        return self.client.submit(run_job, job.fn, job.kwargs, backend, pure=False)

    def wait_any(self, futures):
        return set(self._distributed.wait(list(futures), return_when="FIRST_COMPLETED").done)

    def close(self):
        if self._own:
            self.client.close()

    def describe(self):
        return {"executor": self.name, "workers": self.workers, "scheduler": self.address}


def make_executor(workers=None, dask_scheduler=None):
    """:class:`DaskPool` when ``dask_scheduler`` is given, else :class:`LocalPool` ``(workers)``."""
    if dask_scheduler is not None:
        if workers is not None:
            raise ValueError("give workers or dask_scheduler, not both (the cluster decides its workers)")
        return DaskPool(dask_scheduler)
    return LocalPool(workers)


def _restore(obj):
    """Undo :func:`stadv_ref._io._jsonable`'s strings for non-finite floats."""
    if isinstance(obj, dict):
        return {k: _restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v) for v in obj]
    if obj in ("nan", "inf", "-inf"):
        return float(obj)
    return obj


def _load(path, job):
    """The stored result of ``job`` (``None`` if missing, made by other arguments, or damaged: warns)."""
    if not path.is_file():
        return None
    try:
        rec = read_sealed_json(path, "job result", JOB_VERSION)
    except ValueError as exc:
        warnings.warn(f"{exc}; the job is recomputed", stacklevel=3)
        return None
    if rec.get("job") != job.spec() or "result" not in rec:
        return None
    return rec


def _store(path, job, done):
    """Write one finished job's result (the hook a test uses to stop a run between two jobs)."""
    atomic_write_sealed_json(path, {"job": job.spec(), **done}, JOB_VERSION)


def run_jobs(jobs, store, executor, *, progress=True, desc="jobs"):
    """Run the jobs not yet stored under ``store`` on ``executor``; every job's result, in order.

    A stored result is reused when it was made by the same function, arguments and code
    (:func:`code_fingerprint`; a worker that runs other code is an error); results under ``store``
    of jobs not in ``jobs`` (made with other settings) are removed, so ``store`` holds the step's jobs.

    Parameters
    ----------
    jobs : sequence of Job
        Unique keys.
    store : path-like
        Directory of the stored results (``<key>.json``).
    executor : Executor
    progress : bool
        A tqdm bar over the jobs.
    desc : str

    Returns
    -------
    list of dict
        ``fn``'s result per job (read back from ``store``: a resumed run gives the same bits).
    """
    store = Path(store)
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"job keys must be unique, got {keys}")
    for path in store.glob("*.json"):  # results of jobs the step no longer has (other settings): not its own
        if path.stem not in keys:
            path.unlink()
    backend = current_backend_name()
    code = code_fingerprint(backend)
    jobs = [dataclasses.replace(j, code=code) for j in jobs]
    records = {j.key: _load(store / f"{j.key}.json", j) for j in jobs}
    todo = sorted((j for j in jobs if records[j.key] is None), key=lambda j: -j.cost)
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="job", disable=not progress)
    pending = {}
    try:
        for job in todo[:executor.workers * 2 if executor.workers > 1 else 1]:
            pending[executor.submit(job, backend)] = job
        queue = todo[len(pending):]
        while pending:
            for fut in executor.wait_any(pending):
                job = pending.pop(fut)
                path = store / f"{job.key}.json"
                store.mkdir(parents=True, exist_ok=True)
                try:
                    done = fut.result()
                    if done.get("code") != code:
                        raise RuntimeError(
                            f"job {job.key!r} ran on a worker whose stadv_ref or {backend} backend sources differ "
                            f"from this process's (code fingerprint {str(done.get('code'))[:12]} vs {code[:12]}): "
                            "the workers must run the same code; its result is not stored")
                except BrokenProcessPool as exc:
                    raise RuntimeError(
                        f"a process of the local pool died while running job {job.key!r} (killed, out of memory, or "
                        "it could not start: the pool starts processes with 'spawn', so a script that calls "
                        "reproduce() must do so under `if __name__ == \"__main__\":`); finished jobs are kept; "
                        "rerun, or pass workers=1 to run the jobs in this process") from exc
                _store(path, job, done)
                records[job.key] = _load(path, job)
                bar.update()
                if queue:
                    nxt = queue.pop(0)
                    pending[executor.submit(nxt, backend)] = nxt
    finally:
        bar.close()
        for fut in pending:
            fut.cancel()
    return [_restore(records[k]["result"]) for k in keys]


def job_seconds(store):
    """``{key: (wall, cpu)}`` of the results under ``store`` (for the report's time table)."""
    out = {}
    for path in sorted(Path(store).glob("*.json")):
        try:
            rec = read_sealed_json(path, "job result", JOB_VERSION)
        except ValueError:
            continue
        out[path.stem] = (rec.get("seconds", math.nan), rec.get("cpu_seconds", math.nan))
    return out
