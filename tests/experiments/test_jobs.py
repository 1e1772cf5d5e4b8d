"""The reproduction's jobs (issue #15 deliverable 5): a local process pool, a Dask cluster and one process give
the same numbers, and a run killed with ``kill -9`` between two jobs of any step continues from the last
finished job.

The tiny reproduction of ``test_outputs.py`` (fake MNIST, 8 hidden units) runs on the default local pool
(one process per core) in ``finished``; the other runs are compared with it bit for bit (summaries, the sha256
of every output, the report).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings

import pytest
import test_outputs as _base
from test_outputs import CFG, CONFIG, REPO, _comparable

from stadv_ref.experiments import jobs as jb
from stadv_ref.experiments import pipeline as rp

mnist, finished = _base.mnist, _base.finished  # the fixtures of test_outputs.py (one tiny run per module)


def _square(x):
    return {"x2": x * x, "pid": os.getpid()}


def _fails(x):
    raise RuntimeError(f"job {x} failed")


def test_run_jobs_stores_each_result_and_reuses_it(tmp_path):
    jobs = [jb.Job(f"j{i}", _square, {"x": i}, cost=i) for i in range(4)]
    with jb.LocalPool(1) as pool:
        first = jb.run_jobs(jobs, tmp_path, pool, progress=False)
    assert [r["x2"] for r in first] == [0, 1, 4, 9]  # in job order, whatever the run order (costliest first)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    assert sorted(stamps) == ["j0.json", "j1.json", "j2.json", "j3.json"]
    changed = [jb.Job("j1", _square, {"x": 5})] + jobs[2:]  # j1 with another argument is computed again
    with jb.LocalPool(1) as pool:
        again = jb.run_jobs(changed, tmp_path, pool, progress=False)
    assert [r["x2"] for r in again] == [25, 4, 9]
    assert (tmp_path / "j2.json").stat().st_mtime_ns == stamps["j2.json"]
    assert (tmp_path / "j1.json").stat().st_mtime_ns != stamps["j1.json"]


def test_a_damaged_job_result_is_recomputed_with_a_warning(tmp_path):
    jobs = [jb.Job("a", _square, {"x": 3})]
    with jb.LocalPool(1) as pool:
        jb.run_jobs(jobs, tmp_path, pool, progress=False)
        (tmp_path / "a.json").write_text((tmp_path / "a.json").read_text().replace("9", "8"))
        with pytest.warns(UserWarning, match="job result.*recomputed"):
            assert jb.run_jobs(jobs, tmp_path, pool, progress=False)[0]["x2"] == 9


def test_a_failing_job_raises_and_keeps_the_finished_ones(tmp_path):
    jobs = [jb.Job("ok", _square, {"x": 2}, cost=2), jb.Job("bad", _fails, {"x": 1}, cost=1)]
    with jb.LocalPool(1) as pool, pytest.raises(RuntimeError, match="job 1 failed"):
        jb.run_jobs(jobs, tmp_path, pool, progress=False)
    assert (tmp_path / "ok.json").is_file() and not (tmp_path / "bad.json").exists()


def test_bad_executor_arguments():
    with pytest.raises(ValueError, match="workers"):
        jb.LocalPool(0)
    with pytest.raises(ValueError, match="not both"):
        jb.make_executor(2, "tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="job keys must be unique"):
        jb.run_jobs([jb.Job("a", _square, {"x": 1})] * 2, "unused", jb.LocalPool(1), progress=False)


def test_missing_dask_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(ImportError, match=r"\[dask\]"):
        jb.make_executor(dask_scheduler="tcp://127.0.0.1:8786")


def test_one_process_gives_the_numbers_of_the_pool(finished, mnist, tmp_path):
    out = tmp_path / "one"
    rp.reproduce(out, CFG, data_dir=mnist, progress=False, log=None, workers=1)
    assert _comparable(out) == _comparable(finished)


@pytest.mark.slow
def test_a_dask_local_cluster_gives_the_numbers_of_the_pool(finished, mnist, tmp_path):
    distributed = pytest.importorskip("distributed", reason="the [dask] extra is not installed")
    out = tmp_path / "dask"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # distributed's own deprecation and port warnings
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) \
                as cluster:
            rp.reproduce(out, CFG, data_dir=mnist, progress=False, log=None, dask_scheduler=cluster.scheduler_address)
    assert _comparable(out) == _comparable(finished)
    assert (out / "fig6" / "jobs").is_dir()


_KILL = '''
import os, signal
from stadv_ref.experiments import jobs
real = jobs._store
def store(path, job, done):
    real(path, job, done)  # the job's result is on disk, the next one is not
    if path.parent.parent.name == STEP:
        os.kill(os.getpid(), signal.SIGKILL)
jobs._store = store
'''


@pytest.mark.slow  # about 12 s each; the wheel check of .ci/run leaves the slow tests to the main run
@pytest.mark.parametrize("step", ["models", "fig2", "fig5", "fig11", "local", "fig6"])
def test_killed_between_two_jobs_resumes_from_the_last_finished_one(finished, mnist, tmp_path, step):
    """``kill -9`` of a run on the local pool right after a job of ``step`` was stored; the same command again
    reuses that job (its file is not rewritten) and ends with the numbers of an uninterrupted run."""
    out = tmp_path / "killed"
    code = CONFIG + f"STEP = {step!r}\n" + _KILL + f"rp.reproduce({str(out)!r}, CFG, data_dir={str(mnist)!r}, " \
                                                   "progress=False, log=None, workers=2)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    stored = sorted((out / step / "jobs").glob("*.json"))
    assert len(stored) == 1 and not (out / step / f"{step}.json").exists()
    stamp = stored[0].stat().st_mtime_ns
    rp.reproduce(out, CFG, data_dir=mnist, progress=False, log=None, workers=2)
    assert stored[0].stat().st_mtime_ns == stamp  # resumed, not recomputed
    assert _comparable(out) == _comparable(finished)


def test_stored_jobs_survive_a_rerun_of_their_step_but_not_force(finished, mnist, tmp_path):
    """A step recomputed because the step before it ran again (here ``models``, its marker deleted: the networks
    are loaded, the same files) reuses its stored jobs; ``force`` recomputes them."""
    out = tmp_path / "again"  # not a copy: a job's arguments hold its paths (cache, data)
    rp.reproduce(out, CFG, data_dir=mnist, progress=False, log=None, workers=1)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "fig6" / "jobs").glob("*.json")}
    assert stamps
    (out / "models" / "models.json").unlink()
    status = rp.reproduce(out, CFG, data_dir=mnist, progress=False, log=None, workers=1)
    assert status["fig6"] != "skipped"  # recomputed from its stored jobs
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert _comparable(out) == _comparable(finished)
    rp.reproduce(out, CFG, data_dir=mnist, progress=False, log=None, workers=1, force=["fig6"])
    assert all(p.stat().st_mtime_ns != t for p, t in stamps.items())


def test_the_code_fingerprint_follows_the_sources(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("x = 1\n")
    first = jb._sources_sha256([pkg])
    (pkg / "a.py").write_text("x = 2\n")
    second = jb._sources_sha256([pkg])
    (pkg / "a.py").rename(pkg / "b.py")
    assert len({first, second, jb._sources_sha256([pkg])}) == 3  # content and name count
    third = jb._sources_sha256([pkg])
    (pkg / "notes.txt").write_text("not code")
    assert jb._sources_sha256([pkg]) == third  # only the Python sources count
    here = jb.code_fingerprint("numpy")
    assert len(here) == 64 and here == jb.code_fingerprint.__wrapped__("numpy")  # recomputed, not the cached value
    if "numba" in jb._entry_points():
        assert jb.code_fingerprint("numba") != here  # the plugin's sources are in it


def test_a_stored_job_made_by_other_code_is_recomputed(tmp_path, monkeypatch):
    jobs = [jb.Job("a", _square, {"x": 3})]
    with jb.LocalPool(1) as pool:
        jb.run_jobs(jobs, tmp_path, pool, progress=False)
        stamp = (tmp_path / "a.json").stat().st_mtime_ns
        jb.run_jobs(jobs, tmp_path, pool, progress=False)
        assert (tmp_path / "a.json").stat().st_mtime_ns == stamp  # same code: reused
        monkeypatch.setattr(jb, "code_fingerprint", lambda backend="numpy": "0" * 64)
        assert jb.run_jobs(jobs, tmp_path, pool, progress=False)[0]["x2"] == 9
    assert (tmp_path / "a.json").stat().st_mtime_ns != stamp


def test_steps_made_by_other_code_are_computed_again(mnist, tmp_path, monkeypatch):
    out = tmp_path / "code"
    rp.reproduce(out, CFG, data_dir=mnist, progress=False, log=None, workers=1, only=["fig6"])
    stamps = {p: p.stat().st_mtime_ns for p in (out / "fig6" / "jobs").glob("*.json")}
    again = rp.reproduce(out, CFG, data_dir=mnist, progress=False, log=None, workers=1, only=["fig6"])
    assert again["fig6"] == "skipped"  # the same code: nothing to do
    other = lambda backend="numpy": "0" * 64  # noqa: E731
    monkeypatch.setattr(rp, "code_fingerprint", other)
    monkeypatch.setattr(jb, "code_fingerprint", other)
    with pytest.warns(UserWarning, match="other code"):
        status = rp.reproduce(out, CFG, data_dir=mnist, progress=False, log=None, workers=1, only=["fig6"])
    assert status["fig6"] != "skipped" and status["models"] != "skipped"
    assert all(p.stat().st_mtime_ns != t for p, t in stamps.items())  # every job computed again


def test_a_worker_running_other_code_is_an_error(tmp_path, monkeypatch):
    real = jb.run_job

    def other_worker(fn, kwargs, backend):
        return {**real(fn, kwargs, backend), "code": "f" * 64}

    monkeypatch.setattr(jb, "run_job", other_worker)
    with jb.LocalPool(1) as pool, pytest.raises(RuntimeError, match="other code|sources differ"):
        jb.run_jobs([jb.Job("a", _square, {"x": 2})], tmp_path, pool, progress=False)
    assert not (tmp_path / "a.json").exists()


def test_results_of_jobs_a_step_no_longer_has_are_removed(tmp_path):
    with jb.LocalPool(1) as pool:
        jb.run_jobs([jb.Job(f"j{i}", _square, {"x": i}) for i in range(3)], tmp_path, pool, progress=False)
        jb.run_jobs([jb.Job("j1", _square, {"x": 1})], tmp_path, pool, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j1.json"]
    assert list(jb.job_seconds(tmp_path)) == ["j1"]
