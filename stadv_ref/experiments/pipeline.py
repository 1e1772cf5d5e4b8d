r"""One-command reproduction of the paper's figures (``stadv reproduce``).

The reproduction is a list of **steps** (:data:`STEPS`). Each step computes
from the library, writes its PNG and JSON files atomically into
``<out>/<step>/`` and writes its marker ``<out>/<step>/<step>.json`` *last*.
A step whose marker exists with the same settings and code is skipped, so an
interrupted run resumes from what is on disk; a step whose marker is missing
(or was made with other settings, or by other code: :func:`.jobs.code_fingerprint`)
is recomputed. Markers are sealed (content
hash, format and library version) and record the sha256 of every output of
their step; a damaged marker or a missing or changed output makes the step be
recomputed with a warning (:class:`.steps._Run`), never silently reused.
Every marker and ``run.json`` carry the ``provenance`` block of the invocation that wrote them
(:func:`stadv_ref._provenance.provenance`: versions, git commit, backend, threads, seed, command
line); ``report.md`` prints it. Trained networks are cached by :func:`stadv_ref.training.load_or_train`
(sealed ``.npz`` per variant, with per-epoch checkpoints), so an interrupted
training resumes too.

=========  ==================================================================
``models``  train (or load) every network; test accuracies (appendix 6.8)
``fig2``    lower bound vs ``eps`` for nt/rand/at: Theorem 1 and Algorithm 1
``fig3``    benign input, adversarial input, flow field (Figs. 3, 9, 10)
``fig4``    convergence of Algorithm 1 (Fig. 4)
``fig5``    0/1 adversarial loss from the paper's bounds (Frobenius, spectral
            as printed, SDP) vs ``eps`` per network (Fig. 5)
``fig11``   0/1 adversarial loss from every sound bound per network (Fig. 11),
            and the flow attack on certified points (soundness spot check)
``local``   per-image certificates (fast and tight), the best global bound and
            the flow attack's ceiling vs ``eps`` for nt/at/sdp (issue #21)
``fig6``    stAdv success rate and adversarial accuracy vs ``tau`` (Fig. 6)
``report``  ``report.md``: the paper's claims beside our numbers
=========  ==================================================================

This module holds the settings (:class:`Config`, :func:`quick_config`,
:func:`full_config`), the step table and the driver (:func:`reproduce`,
:func:`export_docs` from :mod:`.export`). The steps are in :mod:`.steps`, the experiments they run
(shared with the ``stadv`` subcommands) in :mod:`.curves`, the figures in
:mod:`.plots` and ``report.md`` in :mod:`.report`; all are re-exported here, as
are the atomic writers of :mod:`stadv_ref._io`. The scripts ``verify/figN_*.py``
run single steps of this pipeline.
"""
from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np

from .._io import (
    _jsonable,
    atomic_savefig,
    atomic_savez,
    atomic_write_json,
    atomic_write_sealed_json,
    atomic_write_text,
    read_sealed_json,
)
from .._provenance import provenance
from ..backend import current_backend_name
from .curves import attack_curve, certify_curve, local_curve, lower_bound_curve, soundness_spot_check
from .export import export_docs
from .jobs import code_fingerprint, make_executor
from .plots import plot_attack, plot_certify, plot_convergence, plot_lower_bound, plot_samples, plot_training
from .report import render_report
from .steps import (
    MARKER_VERSION,
    _Run,
    step_fig2,
    step_fig3,
    step_fig4,
    step_fig5,
    step_fig6,
    step_fig11,
    step_local,
    step_models,
)

__all__ = [
    "atomic_write_text",
    "atomic_write_json",
    "atomic_savefig",
    "atomic_savez",
    "Config",
    "quick_config",
    "full_config",
    "Step",
    "STEPS",
    "STEP_NAMES",
    "reproduce",
    "lower_bound_curve",
    "certify_curve",
    "attack_curve",
    "soundness_spot_check",
    "local_curve",
    "plot_lower_bound",
    "plot_samples",
    "plot_convergence",
    "plot_certify",
    "plot_attack",
    "plot_training",
    "export_docs",
    "write_report",
]


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------
@dataclass
class Config:
    """Settings of one reproduction (see :func:`quick_config`, :func:`full_config`).

    Every field enters the step markers: a step computed with other settings is recomputed.
    """

    mode: str = "quick"
    seed: int = 0
    n_train: int = 5000
    n_test: int = 500
    epochs: dict = field(default_factory=dict)
    hidden_lower: int = 500
    hidden_upper: int = 500
    lower_variants: tuple = ("nt", "rand", "at")
    lower_eps: tuple = (0.5, 2.0, 4.0, 7.84)
    lower_max_iter: int = 10
    lower_n: int = 8
    sample_eps: tuple = (0.5, 4.0)
    cert_variants: tuple = ("nt", "at", "fro", "spe", "stn", "sdp")
    cert_eps: tuple = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1)
    paper_methods: tuple = ("paper-frobenius", "paper-spectral", "sdp")
    sound_methods: tuple = ("frobenius", "spectral", "sdp")
    tight_variants: tuple = ("nt", "sdp")
    tight_method: str = "tight"
    cert_gap_tol: float = 1e-3
    attack_variants: tuple = ("nt", "at", "fro", "spe", "stn", "sdp")
    taus: tuple = (0.0, 0.05, 0.1)
    n_attack: int = 200
    attack_max_iter: int = 100
    spot_check_points: int = 3
    local_variants: tuple = ("nt", "at", "sdp")
    local_n: int = 200
    local_eps_extra: tuple = (0.2, 0.5, 1.0, 2.0)
    local_stop_broken: float = 0.5
    local_restarts: int = 3
    local_steps: int = 40
    local_max_classes: int = 2
    local_chunk: int = 100

    def key(self, fields):
        d = asdict(self)
        return {f: _jsonable(d[f]) for f in fields}


def quick_config(seed=0):
    """The ``--quick`` preset (minutes on 2 CPU cores).

    5,000 training images and the paper's 500 hidden units for every network (Section 3's 512 only in
    :func:`full_config`), 10 outer iterations of Algorithm 1 at 4 budgets for Fig. 2, 500 test images
    and 6 budgets for Figs. 5/11 (SDP solved to a certified gap of 1e-3; the tight bound for ``nt`` and
    ``sdp`` only; the soundness spot check on 3 certified points), 200 test images, 3 values of tau and
    100 L-BFGS iterations for Fig. 6. The per-image certificates (``local``) on the first 200 test
    images of Figs. 5/11, their budgets and then 0.2, 0.5, 1, 2 until the attack breaks half the
    images; the flow attack with 3 restarts of 40 steps on at most 2 classes per image; one job per
    network and 100 of these images (about 1.5 minutes on 2 cores).
    """
    return Config(mode="quick", seed=seed)


def full_config(seed=0):
    """The ``--full`` preset: the paper's scale (60,000 training images, 10,000 test images, 512/500 units)."""
    return Config(mode="full", seed=seed, n_train=60000, n_test=10000, hidden_lower=512, hidden_upper=500,
                  lower_eps=(0.05, 0.5, 0.98, 1.96, 2.94, 3.92, 4.9, 5.88, 6.86, 7.84), lower_max_iter=30,
                  lower_n=16, sample_eps=(0.05, 0.5, 5.0), cert_eps=tuple(np.round(np.linspace(0, 0.1, 11), 4)),
                  tight_variants=("nt", "at", "fro", "spe", "stn", "sdp"), cert_gap_tol=1e-5,
                  taus=(0.0, 0.025, 0.05, 0.075, 0.1), n_attack=10000, attack_max_iter=200,
                  spot_check_points=10, local_n=1000, local_restarts=8, local_steps=100, local_max_classes=4,
                  local_chunk=250)


# ---------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------
@dataclass
class Step:
    """One reproduction step: ``run(ctx) -> summary dict``; ``config_fields`` enter its marker."""

    name: str
    run: object
    config_fields: tuple
    needs: tuple = ()
    description: str = ""


def _step_report(run):
    atomic_write_text(run.out / "report.md", render_report(run, STEP_NAMES))
    return {"report": "report.md"}


_LB = ("lower_variants", "lower_eps", "lower_max_iter", "lower_n", "sample_eps", "hidden_lower")
_DATA = ("mode", "seed", "n_train", "epochs")
STEPS = [
    Step("models", step_models, _DATA + ("hidden_lower", "hidden_upper", "lower_variants", "cert_variants",
                                         "attack_variants"), (), "train or load every network"),
    Step("fig2", step_fig2, _DATA + _LB, ("models",), "lower bounds vs eps (Fig. 2)"),
    Step("fig3", step_fig3, _DATA + _LB, ("fig2",), "samples (Figs. 3, 9, 10)"),
    Step("fig4", step_fig4, _DATA + _LB, ("fig2",), "convergence of Algorithm 1 (Fig. 4)"),
    Step("fig5", step_fig5, _DATA + ("hidden_upper", "cert_variants", "cert_eps", "paper_methods", "cert_gap_tol",
                                     "n_test"),
         ("models",), "0/1 loss from the paper's bounds (Fig. 5)"),
    Step("fig11", step_fig11, _DATA + ("hidden_upper", "cert_variants", "cert_eps", "sound_methods", "tight_variants",
                                       "tight_method", "cert_gap_tol", "n_test", "spot_check_points"),
         ("models",), "0/1 loss from the sound bounds (Fig. 11)"),
    Step("local", step_local, _DATA + ("hidden_upper", "cert_variants", "cert_eps", "sound_methods", "tight_variants",
                                       "tight_method", "cert_gap_tol", "local_variants", "local_n", "local_eps_extra",
                                       "local_stop_broken", "local_restarts", "local_steps", "local_max_classes",
                                       "local_chunk"),
         ("models", "fig11"), "per-image certificates vs the attack ceiling (issue #21)"),
    Step("fig6", step_fig6, _DATA + ("hidden_upper", "attack_variants", "taus", "n_attack", "attack_max_iter"),
         ("models",), "stAdv success and adversarial accuracy vs tau (Fig. 6)"),
    Step("report", _step_report, (), ("fig2", "fig3", "fig4", "fig5", "fig11", "local", "fig6"), "report.md"),
]
STEP_NAMES = tuple(s.name for s in STEPS)


def _done(run, step):
    """Whether ``step``'s marker is intact, complete, made with the current settings by the current code
    (:func:`.jobs.code_fingerprint`), and its outputs unchanged."""
    m = run.summary(step.name)
    if not m or m.get("config") != run.cfg.key(step.config_fields) or m.get("complete") is not True:
        return False
    if m.get("code") != code_fingerprint(current_backend_name()):  # computed by other code: compute again
        run.warn(f"{run.out}: steps computed by other code (stadv_ref's or the {current_backend_name()} backend's "
                 "sources differ from this run's, or another backend); they are computed again")
        return False
    return run.outputs_intact(step.name, m)


def _previous_seconds(path):
    """The ``seconds`` table of an earlier ``run.json`` (``{}``, with a warning, if it cannot be trusted)."""
    if not path.is_file():
        return {}
    try:
        seconds = read_sealed_json(path, "run record", 1).get("seconds")
        if not isinstance(seconds, dict):
            raise ValueError(f"run record {str(path)!r} has no 'seconds' object")
    except ValueError as exc:
        warnings.warn(f"{exc}; its timings are dropped", stacklevel=3)
        return {}
    return seconds


def reproduce(out, cfg=None, *, data_dir=None, cache_dir=None, only=None, force=(), progress=True, log=print,
              workers=None, dask_scheduler=None):
    """Run (or resume) the reproduction into ``out``.

    Parameters
    ----------
    out : str or path-like
        Output directory; one sub-directory per step plus ``report.md`` and ``run.json``.
    cfg : Config, optional
        Default :func:`quick_config`.
    data_dir : str, optional
        MNIST directory (default ``STADV_DATA_DIR``).
    cache_dir : str, optional
        Trained-model cache (default ``<out>/models``).
    only : sequence of str, optional
        Steps to run (their prerequisites run too when their outputs are missing).
    force : sequence of str
        Steps to recompute even when their outputs exist.
    progress : bool
        tqdm progress bars.
    log : callable
        Receives one line per step (``None`` to silence).
    workers : int, optional
        Processes of the local pool that runs the steps' jobs (:mod:`.jobs`); default one per core,
        ``1`` runs them in this process. Every job is single-threaded, so the numbers do not depend on it.
    dask_scheduler : str or distributed.Client, optional
        Run the jobs on this Dask cluster instead (``tcp://host:8786``; needs the ``[dask]`` extra,
        and workers that see the same data, cache and output paths).

    Returns
    -------
    dict
        Per step: ``"skipped"`` or the seconds it took.
    """
    cfg = cfg or quick_config()
    unknown = sorted(set(only or ()) | set(force) - set(STEP_NAMES))
    unknown = [u for u in unknown if u not in STEP_NAMES]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; steps are {list(STEP_NAMES)}")
    run = _Run(out, cfg, data_dir, cache_dir, progress)
    run.out.mkdir(parents=True, exist_ok=True)
    with make_executor(workers, dask_scheduler) as run.executor:
        return _drive(run, cfg, only, force, log)


def _drive(run, cfg, only, force, log):
    """:func:`reproduce` after its checks: run the steps in order, skip the finished ones."""
    by_name = {s.name: s for s in STEPS}
    wanted = list(only) if only else list(STEP_NAMES)
    order = []

    def visit(name, explicit):
        if name in order:
            return
        step = by_name[name]
        for dep in step.needs:
            if not _done(run, by_name[dep]) or dep in force:
                visit(dep, False)
        order.append(name)

    for name in STEP_NAMES:
        if name in wanted:
            visit(name, True)
    status = {}
    log = log or (lambda *_: None)
    rerun = set()
    for name in order:
        step = by_name[name]
        if name not in force and not (set(step.needs) & rerun) and _done(run, step):
            status[name] = "skipped"
            log(f"[{name}] outputs exist, skipped")
            continue
        if name in force:
            # forced: earlier job results go. Otherwise a stored job is reused only when it was made with the
            # same arguments (settings and the sha256 of its network: a retrained network redoes its jobs)
            shutil.rmtree(run.out / name / "jobs", ignore_errors=True)
        log(f"[{name}] {step.description} ...")
        t0, c0 = time.perf_counter(), time.process_time()
        run.provenance = provenance(backend=current_backend_name(), seed=cfg.seed)  # report.md prints it
        summary = step.run(run)
        secs = round(time.perf_counter() - t0, 2)
        cpu = round(time.process_time() - c0, 2)
        atomic_write_sealed_json(run.marker(name), {
            "step": name, "complete": True, "seconds": secs, "cpu_seconds": cpu,
            "config": cfg.key(step.config_fields), "code": code_fingerprint(current_backend_name()),
            "summary": summary, "outputs": run.output_hashes(name),
            "provenance": provenance(backend=current_backend_name(), seed=cfg.seed)}, MARKER_VERSION)
        status[name] = secs
        rerun.add(name)
        log(f"[{name}] done in {secs:.1f} s (CPU {cpu:.1f} s)")
    seconds = _previous_seconds(run.out / "run.json")
    seconds.update({k: v for k, v in status.items() if v != "skipped"})
    atomic_write_sealed_json(run.out / "run.json", {"config": asdict(cfg), "seconds": seconds, "last_status": status,
                                                    "executor": run.executor.describe(),
                                                    "provenance": provenance(backend=current_backend_name(),
                                                                             seed=cfg.seed)})
    return status


def write_report(out, cfg=None, *, cache_dir=None):
    """Write ``<out>/report.md`` from the steps finished in ``out`` only; runs nothing.

    For a run that was stopped (or is still running): the report lists the steps not computed
    and leaves out their sections. ``stadv reproduce --report-only``.

    Returns
    -------
    pathlib.Path
        The report written.
    """
    cfg = cfg or quick_config()
    run = _Run(out, cfg, None, cache_dir, False)
    run.executor = None  # no job runs here: the report names no executor
    if not any(run.summary(k) for k in STEP_NAMES):
        raise ValueError(f"{str(run.out)!r} holds no finished step of a {cfg.mode} reproduction; run stadv reproduce")
    path = run.out / "report.md"
    atomic_write_text(path, render_report(run, STEP_NAMES))
    return path
