r"""The steps of ``stadv reproduce``: each computes one figure from the library and returns its summary.

A step is a function ``step(run) -> dict`` of a :class:`_Run` (output directory, settings, cached
networks and test data, the executor of its jobs). The steps ``models``, ``fig2``, ``fig5``, ``fig11``,
``local`` and ``fig6`` split their work into independent jobs (:mod:`.jobs`, :mod:`.shards`: one network's
training, one (network, ``eps``) lower bound, one network's bounds by one method, one network's per-image
certificates, one (network, ``tau``) attack) that run on a local process pool or a Dask cluster and are stored as they finish,
so a killed run resumes from the last finished job. It writes its PNG (and array) files into ``<out>/<step>/``; the summary it
returns becomes the step's marker ``<out>/<step>/<step>.json``, written last by
:func:`stadv_ref.experiments.pipeline.reproduce`.

A marker is a sealed JSON file (:func:`stadv_ref._io.read_sealed_json`: ``format_version``
:data:`MARKER_VERSION`, ``library_version``, ``sha256``) that also records the sha256 of every
output of its step (:meth:`_Run.output_hashes`: the files of ``<out>/<step>/``, ``report.md``
for ``report``, the cached networks for ``models``). :meth:`_Run.summary` and
:meth:`_Run.outputs_intact` re-verify both: a marker that is damaged, changed, of another
format or not a JSON object, or an output that is missing or changed, makes the step be
recomputed, with a warning naming the file.

==============  ==========================================================================
``models``      train (or load) every network (appendix 6.8)
``fig2``        Theorem 1 and Algorithm 1 vs ``eps`` (Eqs. (6)-(8), [E8]; Fig. 2)
``fig3``        benign, adversarial input and flow (Figs. 3, 9, 10), from ``fig2``'s pairs
``fig4``        convergence of Algorithm 1 (Fig. 4, [E10]), from ``fig2``'s histories
``fig5``        0/1 loss from the paper's bounds (Section 4.1, [E12], [E13]; Fig. 5)
``fig11``       0/1 loss from every sound bound (Fig. 11) and a soundness spot check
``local``       per-image certificates (fast, tight), the best global bound and the attack ceiling (#21)
``fig6``        stAdv success rate and adversarial accuracy vs ``tau`` (Fig. 6)
==============  ==========================================================================
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .._io import atomic_savez, read_npz, read_sealed_json, seal_arrays, sha256_file, unseal_arrays
from .._validate import check_positive_int
from ..data import load_mnist
from ..training import load_or_train, model_path
from .curves import certify_curve, soundness_spot_check
from .jobs import Job, LocalPool, run_jobs
from .plots import plot_attack, plot_certify, plot_convergence, plot_lower_bound, plot_samples
from .shards import (
    attack_network,
    certify_network,
    local_network,
    lower_bound_network,
    merge_attack,
    merge_certify,
    merge_local,
    merge_lower_bound,
    train_network,
)

MARKER_VERSION = 2
"""``format_version`` of the step markers (1: no seal and no output hashes; recomputed)."""
OUTPUT_VERSION = 1
"""``format_version`` of the sealed ``.npz`` step outputs (``fig2/pairs.npz``)."""


class _Run:
    """Context of one reproduction run: output directory, settings, data and model access, markers."""

    def __init__(self, out, cfg, data_dir, cache_dir, progress, executor=None):
        self.out = Path(out)
        self.cfg = cfg
        self.data_dir = data_dir
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.out / "models"
        self.progress = progress
        self.executor = executor or LocalPool(1)  # where the steps' jobs run (:mod:`.jobs`)
        self.provenance = None  # set by the driver: the provenance block of this invocation
        self._test = None
        self._warned = set()

    def dir(self, step):
        d = self.out / step
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _model_args(self, variant, hidden):
        cfg = self.cfg
        return dict(cache_dir=self.cache_dir, n_train=cfg.n_train, hidden=hidden, seed=cfg.seed,
                    epochs=cfg.epochs.get(variant), quick=cfg.mode == "quick")

    def model(self, variant, hidden):
        return load_or_train(variant, **self._model_args(variant, hidden), data_dir=self.data_dir,
                             progress=self.progress, with_metadata=True)

    def job_data_dir(self):
        """The MNIST directory as a job sees it (``STADV_DATA_DIR`` resolved here, absolute)."""
        d = self.data_dir if self.data_dir is not None else os.environ.get("STADV_DATA_DIR")
        return None if d is None else str(Path(d).resolve())

    def job_model(self, variant, hidden):
        """The arguments of a job that uses network ``(variant, hidden)``: ``load_or_train``'s keywords and,
        once it is trained, its file's sha256 (a retrained network makes the job run again)."""
        margs = self._model_args(variant, hidden)
        path = model_path(variant, **margs)
        args = {k: v for k, v in margs.items() if k != "hidden"}
        args["cache_dir"] = str(Path(args["cache_dir"]).resolve())
        args["data_dir"] = self.job_data_dir()
        return {"variant": variant, "hidden": hidden, "model": args,
                "model_sha256": sha256_file(path) if path.is_file() else None}

    def jobs(self, step, jobs, desc):
        """Run ``jobs`` of ``step`` on the run's executor (results stored in ``<out>/<step>/jobs/``)."""
        return run_jobs(jobs, self.out / step / "jobs", self.executor, progress=self.progress, desc=desc)

    def test_data(self, n):
        if self._test is None or len(self._test[1]) < n:
            self._test = load_mnist("test", data_dir=self.data_dir, limit=n)
        X, y = self._test
        return X[:n], y[:n]

    def marker(self, step):
        return self.out / step / f"{step}.json"

    def warn(self, message):
        """``warnings.warn(message)`` once per run."""
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, stacklevel=3)

    def summary(self, step):
        """The verified marker of ``step`` (a dict with ``summary``, ``config``, ``outputs``, ...), or ``None``.

        ``None`` when the marker is missing, or (with a warning naming it) when it cannot be
        trusted: damaged, changed after it was written, another format, not a JSON object.
        """
        path = self.marker(step)
        if not path.is_file():
            return None
        try:
            m = read_sealed_json(path, f"marker of step {step!r}", MARKER_VERSION)
            for key in ("summary", "config", "outputs"):
                if not isinstance(m.get(key), dict):
                    raise ValueError(f"marker of step {step!r} {str(path)!r} has no {key!r} object")
        except ValueError as exc:
            self.warn(f"{exc}; the step is recomputed")
            return None
        return m

    def output_files(self, step):
        """The outputs of ``step``: the files of ``<out>/<step>/`` but its marker (and hidden files),
        ``report.md`` for ``report``, the cached networks for ``models``."""
        d, marker = self.out / step, self.marker(step)
        files = sorted(p for p in d.iterdir() if p.is_file() and p != marker and not p.name.startswith(".")) \
            if d.is_dir() else []
        if step == "report":
            files.append(self.out / "report.md")
        if step == "models":
            files += [model_path(v, **self._model_args(v, h)) for v, h in _models_needed(self.cfg)]
        return files

    def _where(self, path):
        try:
            return Path(path).relative_to(self.out).as_posix()
        except ValueError:
            return str(Path(path).resolve())

    def output_hashes(self, step):
        """``{path: sha256}`` of :meth:`output_files` (paths relative to ``out`` where inside it)."""
        return {self._where(p): sha256_file(p) for p in self.output_files(step) if p.is_file()}

    def outputs_intact(self, step, marker):
        """Whether every output recorded in ``marker`` exists with its recorded sha256 (warns if not)."""
        for where, digest in marker["outputs"].items():
            path = self.out / where
            if not path.is_file():
                problem = "is missing"
            elif sha256_file(path) != digest:
                problem = "was changed or damaged after the step wrote it"
            else:
                continue
            self.warn(f"output {str(path)!r} of step {step!r} {problem}; the step is recomputed")
            return False
        return True


def _models_needed(cfg):
    need = {(v, cfg.hidden_lower) for v in cfg.lower_variants}
    need |= {(v, cfg.hidden_upper) for v in set(cfg.cert_variants) | set(cfg.attack_variants) | set(cfg.local_variants)}
    order = {"nt": 0, "rand": 1, "fro": 2, "spe": 3, "stn": 4, "at": 5, "sdp": 6}
    return sorted(need, key=lambda t: (order.get(t[0], 99), t[1]))


def step_models(run):
    """Train (or load) every network the other steps use; their accuracies (appendix 6.8)."""
    jobs = []
    for variant, hidden in _models_needed(run.cfg):
        m = run.job_model(variant, hidden)
        jobs.append(Job(f"{variant}-h{hidden}", train_network, {k: m[k] for k in ("variant", "hidden", "model")},
                        cost=_TRAIN_COST.get(variant, 1.0)))
    rows = run.jobs("models", jobs, "train")
    return {"models": rows, "cache_dir": str(run.cache_dir)}


_TRAIN_COST = {"sdp": 10.0, "at": 6.0, "stn": 2.0, "spe": 1.5, "fro": 1.2}
"""Relative training times (measured at 60,000 images): the pool starts the longest first."""


def step_fig2(run):
    """Fig. 2: lower bounds vs ``eps``; also keeps the pairs (``pairs.npz``) for Figs. 3/4."""
    cfg = run.cfg
    d = run.dir("fig2")
    curves, arrays = {}, {}
    eps_all = sorted(set(cfg.lower_eps) | set(cfg.sample_eps))
    jobs = [Job(f"{v}-eps{e:g}", lower_bound_network, dict(run.job_model(v, cfg.hidden_lower), eps=float(e),
                                                            max_iter=cfg.lower_max_iter, n=cfg.lower_n, seed=cfg.seed),
                cost=float(e)) for v in cfg.lower_variants for e in eps_all]
    results = run.jobs("fig2", jobs, "lower bounds")
    for i, variant in enumerate(cfg.lower_variants):
        parts = results[i * len(eps_all):(i + 1) * len(eps_all)]
        c = merge_lower_bound(parts)
        for e, p in zip(c["eps"], parts):
            arrays[f"{variant}_eps{e:g}_x"] = np.asarray(p["x"], dtype=p["dtype"])
            arrays[f"{variant}_eps{e:g}_flow"] = np.asarray(p["flow"], dtype=p["dtype"])
        keep = [i for i, e in enumerate(c["eps"]) if e in cfg.lower_eps]
        curves[variant] = c
        curves[variant]["in_figure"] = keep
    fig_curves = {v: {k: ([c[k][i] for i in c["in_figure"]] if isinstance(c[k], list) and len(c[k]) == len(c["eps"])
                          else c[k]) for k in c} for v, c in curves.items()}
    plot_lower_bound(fig_curves, d / "fig2_lower_bound.png", title="Lower bounds of the adversarial loss (Fig. 2)")
    atomic_savez(d / "pairs.npz", **seal_arrays(arrays, OUTPUT_VERSION))
    return {"curves": curves, "hidden": cfg.hidden_lower}


def _fig2_data(run):
    """``fig2``'s verified summary and pairs (``ValueError`` naming the file if either is damaged)."""
    marker = run.summary("fig2")
    if marker is None:
        raise ValueError(f"the marker of step 'fig2' {str(run.marker('fig2'))!r} is missing or damaged; rerun fig2")
    path = run.out / "fig2" / "pairs.npz"
    arrays, _ = unseal_arrays(read_npz(path, "step output"), "step output", path, OUTPUT_VERSION)
    return marker["summary"], arrays


def step_fig3(run):
    """Figs. 3, 9, 10: Algorithm 1's pairs at the sample budgets, one figure per network."""
    cfg = run.cfg
    summary, arrays = _fig2_data(run)
    d = run.dir("fig3")
    written = []
    for variant in cfg.lower_variants:
        samples = []
        for e in cfg.sample_eps:
            k = f"{variant}_eps{e:g}"
            c = summary["curves"][variant]
            i = c["eps"].index(e)
            samples.append(dict(x=arrays[k + "_x"], flow=arrays[k + "_flow"],
                                label=f"eps = {e:g}\nl_adv = {c['exact_loss'][i]:.3g}"))
        name = f"fig3_samples_{variant}.png"
        plot_samples(samples, d / name, title=f"Algorithm 1 on f_{variant}: benign, adversarial, flow (Figs. 3, 9, 10)")
        written.append(name)
    return {"figures": written}


def step_fig4(run):
    """Fig. 4: the best exact loss per outer iteration of Algorithm 1 (from ``fig2``)."""
    cfg = run.cfg
    summary, _ = _fig2_data(run)
    d = run.dir("fig4")
    curves = {}
    for variant in cfg.lower_variants:
        c = summary["curves"][variant]
        for i, e in enumerate(c["eps"]):
            if e in cfg.lower_eps:
                curves[f"f_{variant}, eps = {e:g}"] = c["convergence"][i]
    plot_convergence(curves, d / "fig4_convergence.png", title="Convergence of Algorithm 1 (Fig. 4)")
    return {"curves": curves}


def _cert_step(run, step, methods, title, by, extra=None, spot_variant=None):
    cfg = run.cfg
    d = run.dir(step)
    X, y = run.test_data(cfg.n_test)
    cache = str((run.out / "bound-cache").resolve())
    jobs, parts = [], {}
    for variant in cfg.cert_variants:
        ms = tuple(methods) + tuple(m for m in (extra or {}).get(variant, ()) if m not in methods)
        for m in ms:
            jobs.append(Job(f"{variant}-{m}", certify_network, dict(
                run.job_model(variant, cfg.hidden_upper), data_dir=run.job_data_dir(), n_test=cfg.n_test,
                eps=list(cfg.cert_eps), method=m, cache_dir=cache, gap_tol=cfg.cert_gap_tol),
                cost=_BOUND_COST.get(m, 1.0)))
            parts.setdefault(variant, []).append(len(jobs) - 1)
    results = run.jobs(step, jobs, "bounds")
    curves = {v: merge_certify([results[i] for i in idx]) for v, idx in parts.items()}
    summary = {}
    if spot_variant is not None:  # the bounds are in the cache: this only certifies again
        net, _ = run.model(spot_variant, cfg.hidden_upper)
        res = certify_curve(net, X, y, cfg.cert_eps, (cfg.tight_method,), cache_dir=cache, gap_tol=cfg.cert_gap_tol,
                            progress=False, keep=True)["results"][cfg.tight_method]
        points = soundness_spot_check(net, X, y, res.certified_radius, n_points=cfg.spot_check_points, seed=cfg.seed)
        summary["spot_check"] = {"network": spot_variant, "method": cfg.tight_method, "points": points}
    plot_certify(curves, d / f"{step}_certification.png", by=by, title=title)
    return {"curves": curves, "n_test": int(len(y)), **summary}


_BOUND_COST = {"tight": 8.0, "sdp": 4.0, "paper-frobenius": 0.5, "paper-spectral": 0.5}


def step_fig5(run):
    """Fig. 5: 0/1 adversarial loss from the paper's bounds (printed Frobenius/spectral and SDP)."""
    return _cert_step(run, "fig5", run.cfg.paper_methods,
                      "0/1 adversarial loss from the paper's bounds (Fig. 5; printed Frobenius/spectral are unsound)",
                      "method")


def step_fig11(run):
    """Fig. 11: 0/1 adversarial loss from the sound bounds (and ``tight_method`` on ``tight_variants``).

    On the first network with the tight bound, the flow attack hits ``spot_check_points`` certified
    test points at their certified radius (:func:`.curves.soundness_spot_check`).
    """
    cfg = run.cfg
    extra = {v: (cfg.tight_method,) for v in cfg.tight_variants}
    spot = next((v for v in cfg.cert_variants if v in cfg.tight_variants), None) if cfg.spot_check_points else None
    return _cert_step(run, "fig11", cfg.sound_methods, "Upper bounds on the 0/1 adversarial loss (Fig. 11)",
                      "network", extra, spot_variant=spot)


def step_fig6(run):
    """Fig. 6: stAdv success rate and adversarial accuracy vs ``tau`` for every attacked network."""
    cfg = run.cfg
    d = run.dir("fig6")
    jobs = [Job(f"{v}-tau{t:g}", attack_network, dict(run.job_model(v, cfg.hidden_upper), data_dir=run.job_data_dir(),
                                                       n_test=cfg.n_attack, tau=float(t), max_iter=cfg.attack_max_iter))
            for v in cfg.attack_variants for t in cfg.taus]
    results = run.jobs("fig6", jobs, "stAdv")
    k = len(cfg.taus)
    curves = {v: merge_attack(results[i * k:(i + 1) * k]) for i, v in enumerate(cfg.attack_variants)}
    plot_attack(curves, d / "fig6_stadv.png", title="stAdv attack vs tau (Fig. 6)")
    return {"curves": curves, "n_attack": int(curves[cfg.attack_variants[0]]["n"]) if curves else 0}


def _global_methods(cfg, variant):
    """The sound global bounds of ``variant`` that ``fig11`` cached (its sound methods, the tight method on
    ``tight_variants``); the sound spectral bound alone for a network ``fig11`` did not bound."""
    if variant not in cfg.cert_variants:
        return ("spectral",)
    ms = tuple(cfg.sound_methods) + ((cfg.tight_method,) if variant in cfg.tight_variants else ())
    return tuple(dict.fromkeys(ms)) or ("spectral",)


def step_local(run):
    """Issue #21: certified accuracy from the per-image certificate (fast, tight) and the best global bound,
    and accuracy under the flow attack, vs ``eps`` (Figs. 5/11's grid, then ``local_eps_extra``).

    One job per network and ``local_chunk`` test images; :func:`.shards.merge_local` joins a network's
    parts (and applies ``local_stop_broken`` to the merged ceiling)."""
    cfg = run.cfg
    d = run.dir("local")
    cache = str((run.out / "bound-cache").resolve())
    chunk = check_positive_int("local_chunk", cfg.local_chunk)
    ranges = [(a, min(a + chunk, cfg.local_n)) for a in range(0, cfg.local_n, chunk)]
    jobs = [Job(f"{v}-{a}-{b}", local_network, dict(
        run.job_model(v, cfg.hidden_upper), data_dir=run.job_data_dir(), n_test=cfg.local_n, eps=list(cfg.cert_eps),
        options=dict(extra_eps=list(cfg.local_eps_extra), stop_broken=None,
                     global_methods=list(_global_methods(cfg, v)), cache_dir=cache, gap_tol=cfg.cert_gap_tol,
                     attack_seed=cfg.seed, restarts=cfg.local_restarts, steps=cfg.local_steps,
                     max_classes=cfg.local_max_classes), start=a, stop=b), cost=b - a)
            for v in cfg.local_variants for a, b in ranges]
    results = run.jobs("local", jobs, "local")
    k = len(ranges)
    curves = {v: merge_local(results[i * k:(i + 1) * k], len(cfg.cert_eps), cfg.local_stop_broken)
              for i, v in enumerate(cfg.local_variants)}
    n_test = next(iter(curves.values()))["n"] if curves else 0
    plot_certify({v: {"eps": c["eps"], "methods": list(_LOCAL_LINES),
                      "zero_one": {m: c[m] for m in _LOCAL_LINES}} for v, c in curves.items()},
                 d / "local_certification.png", by="network", ylabel="fraction of test images",
                 title="Per-image certificates vs the attack ceiling (issue #21)")
    return {"curves": curves, "n_test": int(n_test)}


_LOCAL_LINES = ("certified_fast", "certified_tight", "certified_global", "attack_accuracy")
