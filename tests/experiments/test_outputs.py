"""``stadv reproduce`` outputs that cannot lie, and the same numbers from the same seed (issue #19).

A tiny reproduction on fake MNIST is made once; each test copies it and damages one file. A
step marker is sealed and records the sha256 of every output of its step, so a truncated
figure, a changed ``pairs.npz``, a damaged cached network, a changed or replaced marker (a
JSON list where an object belongs included) or an old unsealed marker makes that step be
recomputed with a warning naming the file -- before, all steps were "skipped" or the report
died with ``AttributeError``. Two runs with the same seed, in this process and in another,
give the same summaries, output files and report (deliverable 4), and so does a run killed with
``SIGKILL`` while training a network or inside a step, then resumed.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from stadv_ref import _io
from stadv_ref.experiments import pipeline as rp

REPO = Path(__file__).resolve().parents[2]
CONFIG = textwrap.dedent('''
    from stadv_ref.experiments import pipeline as rp
    CFG = rp.Config(mode="test", n_train=300, n_test=20, epochs={"nt": 1, "fro": 1}, hidden_lower=8, hidden_upper=8,
                    lower_variants=("nt", "rand"), lower_eps=(0.5, 2.0), lower_max_iter=1, lower_n=2,
                    sample_eps=(0.5,), cert_variants=("nt",), cert_eps=(0.0, 0.05),
                    paper_methods=("paper-spectral", "spectral"), sound_methods=("spectral", "frobenius"),
                    tight_variants=("nt",), tight_method="aabb", attack_variants=("nt", "fro"), taus=(0.05,),
                    n_attack=8, attack_max_iter=5, local_variants=("nt",), local_n=10, local_eps_extra=(0.5, 2.0),
                    local_stop_broken=1.0, local_restarts=2, local_steps=5, local_max_classes=2)
''')
_ns = {}
exec(CONFIG, _ns)
CFG = _ns["CFG"]


def _write_idx(path, arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + np.ascontiguousarray(arr, dtype=np.uint8).tobytes())


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    """Fake MNIST IDX files: 300 training and 60 test images with labels 0..9."""
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(1)
    for split, n in (("train", 300), ("t10k", 60)):
        labels = np.arange(n) % 10
        protos = rng.uniform(0, 255, (10, 28, 28))
        _write_idx(d / f"{split}-images-idx3-ubyte.gz", np.clip(protos[labels] * 0.7 + rng.uniform(0, 80, (n, 28, 28)),
                                                                0, 255))
        _write_idx(d / f"{split}-labels-idx1-ubyte.gz", labels)
    return d


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mnist):
    out = tmp_path_factory.mktemp("repro") / "out"
    rp.reproduce(out, CFG, data_dir=mnist, progress=False, log=None)
    return out


def _rerun(out, mnist, **kw):
    """Resume the reproduction in ``out``: the steps that ran and the warnings raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        status = rp.reproduce(out, CFG, data_dir=mnist, progress=False, log=None, **kw)
    return {k for k, v in status.items() if v != "skipped"}, [str(w.message) for w in caught]


@pytest.fixture
def copy(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    return out


def test_markers_are_sealed_and_record_every_output(copy, mnist):
    m = json.loads((copy / "fig2" / "fig2.json").read_text())
    assert m["format_version"] == 2 and len(m["sha256"]) == 64 and m["library_version"]
    assert set(m["outputs"]) == {"fig2/fig2_lower_bound.png", "fig2/pairs.npz"}
    assert set(json.loads((copy / "report" / "report.json").read_text())["outputs"]) == {"report.md"}
    models = json.loads((copy / "models" / "models.json").read_text())["outputs"]
    assert {Path(p).name for p in models} == {"nt-h8-n300-s0-e1.npz", "rand-h8-n300-s0.npz", "fro-h8-n300-s0-e1.npz"}
    ran, warned = _rerun(copy, mnist)
    assert ran == set() and warned == []  # a copied folder is intact: nothing is recomputed


@pytest.mark.parametrize("path, redone", [
    ("fig4/fig4_convergence.png", {"fig4"}),
    ("fig2/pairs.npz", {"fig2", "fig3", "fig4"}),
    ("fig6/fig6_stadv.png", {"fig6"}),
    ("report.md", set()),
])
@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_or_missing_output_is_recomputed_with_a_warning(copy, mnist, path, redone, damage):
    f = copy / path
    before = f.read_bytes()
    if damage == "truncated":
        f.write_bytes(before[: len(before) // 2])
    else:
        f.unlink()
    ran, warned = _rerun(copy, mnist)
    assert ran == redone | {"report"}
    assert any(str(f) in w and ("changed" in w or "missing" in w) for w in warned), warned
    assert f.read_bytes() == before  # recomputed bit for bit


@pytest.mark.parametrize("content, needle", [
    ("[1, 2, 3]", "JSON list where an object belongs"),
    ("{\"step\": \"fig4\"", "not readable JSON"),
    ("", "not readable JSON"),
    (None, "does not match its content hash"),  # the summary changed under the old hash
    ("old", "no content hash"),  # the unsealed marker of earlier versions
    ("nosummary", "has no 'summary' object"),
])
def test_a_bad_marker_is_recomputed_with_a_warning(copy, mnist, content, needle):
    marker = copy / "fig4" / "fig4.json"
    m = json.loads(marker.read_text())
    if content is None:
        m["summary"]["curves"] = {}
        content = json.dumps(m)
    elif content == "old":
        content = json.dumps({k: m[k] for k in ("step", "complete", "seconds", "config", "summary")})
    elif content == "nosummary":
        m["summary"] = [1]
        m.pop("sha256")
        _io.atomic_write_sealed_json(marker, {k: v for k, v in m.items() if k not in _io.SEAL_FIELDS}, 2)
        content = marker.read_text()
    marker.write_text(content)
    ran, warned = _rerun(copy, mnist)
    assert ran == {"fig4", "report"}
    assert any(needle in w and str(marker) in w for w in warned), warned
    assert json.loads(marker.read_text())["summary"]["curves"]


def test_a_damaged_cached_network_is_retrained_and_everything_after_it_redone(copy, mnist):
    model = copy / "models" / "nt-h8-n300-s0-e1.npz"
    before = model.read_bytes()
    model.write_bytes(before[:300])
    ran, warned = _rerun(copy, mnist)
    assert ran == set(rp.STEP_NAMES)
    assert any(str(model) in w for w in warned)
    assert model.read_bytes() == before  # retrained bit for bit


def test_a_bad_run_record_is_replaced_with_a_warning(copy, mnist):
    (copy / "run.json").write_text("[]")
    ran, warned = _rerun(copy, mnist, force=("fig4",))
    assert ran == {"fig4", "report"} and any("run record" in w for w in warned)
    assert _io.read_sealed_json(copy / "run.json", "run record")["seconds"]["fig4"] >= 0


def _untimed(obj):
    """``obj`` without the entries that depend on when or where it ran (timings, the cache path)."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in ("seconds", "time", "cache_dir")}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _comparable(out):
    """Everything a run wrote that must not depend on when or where it ran."""
    res = {}
    for name in rp.STEP_NAMES:
        m = json.loads((out / name / f"{name}.json").read_text())
        res[name] = (_untimed(m["summary"]), m["outputs"] if name != "report" else None)
    report = (out / "report.md").read_text().split("## Run time")[0]
    res["report.md"] = report.replace(str(out), "<out>")
    return res


def test_same_seed_same_outputs_in_this_process_and_another(finished, mnist, tmp_path):
    """Summaries, the sha256 of every figure, pairs and network file, and the report agree bit for bit."""
    again = tmp_path / "again"
    rp.reproduce(again, CFG, data_dir=mnist, progress=False, log=None)
    reference = _comparable(finished)
    assert _comparable(again) == reference
    other = tmp_path / "other"
    proc = subprocess.run([sys.executable, "-c", CONFIG + f"rp.reproduce({str(other)!r}, CFG, data_dir="
                           f"{str(mnist)!r}, progress=False, log=None)"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONHASHSEED": "99"})
    assert proc.returncode == 0, proc.stderr
    assert _comparable(other) == reference


@pytest.mark.parametrize("where", ["training", "fig5"])
def test_killed_with_sigkill_then_resumed_gives_the_same_outputs(finished, mnist, tmp_path, where):
    """``kill -9`` in the middle of training a network or of a step, then a rerun: the same bits."""
    out = tmp_path / "killed"
    kill = textwrap.dedent('''
        import os, signal
        from stadv_ref.training import trainer
        calls = []
        if WHERE == "training":
            run_epoch = trainer._Trainer.run_epoch
            def die(self, *a, **k):
                calls.append(1)
                if len(calls) == 2:  # the first epoch of the second network
                    os.kill(os.getpid(), signal.SIGKILL)
                return run_epoch(self, *a, **k)
            trainer._Trainer.run_epoch = die
        else:
            step = next(s for s in rp.STEPS if s.name == WHERE)
            real = step.run
            def die(run):
                real(run)  # the step's files are written, its marker is not
                os.kill(os.getpid(), signal.SIGKILL)
            step.run = die
    ''')
    # workers=1: the jobs run in this process, where the patch is (tests/experiments/test_jobs.py kills a pool)
    code = CONFIG + f"WHERE = {where!r}\n" + kill + f"rp.reproduce({str(out)!r}, CFG, data_dir={str(mnist)!r}, " \
                                                    "progress=False, log=None, workers=1)\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr
    assert not (out / "report.md").exists()
    rp.reproduce(out, CFG, data_dir=mnist, progress=False, log=None)
    assert _comparable(out) == _comparable(finished)


def test_local_step_fields_and_order_of_the_certified_fractions(copy):
    """Issue #21 deliverable 5: per network and eps, certified(fast) <= certified(tight) <= accuracy under attack
    (the tight bound is elementwise at most the fast one; a certified image survives the attack), best global
    certified <= attack too; budgets beyond the Fig. 5/11 grid; the table and figure in report.md."""
    m = _io.read_sealed_json(copy / "local" / "local.json", "marker", 2)
    assert m["provenance"]["seed"] == CFG.seed and m["summary"]["n_test"] == CFG.local_n
    assert set(m["outputs"]) == {"local/local_certification.png"}
    c = m["summary"]["curves"]["nt"]
    for key in ("eps", "certified_fast", "certified_tight", "certified_global", "attack_accuracy", "gap_fast",
                "gap_tight", "attacked_images", "global_methods", "clean_accuracy"):
        assert key in c, key
    assert c["eps"][:len(CFG.cert_eps)] == list(CFG.cert_eps) and len(c["eps"]) > len(CFG.cert_eps)
    assert c["global_methods"] == ["spectral", "frobenius", "aabb"]
    for k in range(len(c["eps"])):
        fast, tight, glob, att = (c[f][k] for f in ("certified_fast", "certified_tight", "certified_global",
                                                     "attack_accuracy"))
        assert 0 <= fast <= tight <= att + 1e-12 <= c["clean_accuracy"] + 1e-12
        assert glob <= att + 1e-12 and abs(c["gap_tight"][k] - (att - tight)) < 1e-12
    assert all(np.diff(c["attack_accuracy"]) <= 0)  # the budget sets are nested
    report = (copy / "report.md").read_text()
    assert "(local/local_certification.png)" in report and "| gap (ceiling - tight) |" in report
    assert f"| f_nt | {c['eps'][-1]:g} |" in report


def test_markers_and_run_record_carry_the_provenance_and_the_report_prints_it(copy, mnist):
    """Deliverable 4 of issue #20: versions, commit, backend, threads, seed and command line in every marker,
    ``run.json`` and ``report.md``; a step computed by another invocation is named in the report."""
    for name in rp.STEP_NAMES:
        p = _io.read_sealed_json(copy / name / f"{name}.json", "marker", 2)["provenance"]
        assert p["library_version"] and p["backend"] == "numpy" and p["seed"] == CFG.seed and p["command_line"]
    run = _io.read_sealed_json(copy / "run.json", "run record")
    assert run["provenance"]["versions"]["numpy"] == np.__version__ and "threads" in run["provenance"]
    report = (copy / "report.md").read_text()
    section = report.split("## Provenance")[1]
    for needle in ("library version", "git commit", "backend | numpy", "threads", "command line", "numpy "):
        assert needle in section
    assert "earlier invocation" not in section
    marker = copy / "fig4" / "fig4.json"  # as if fig4 had been computed by another library version
    m = _io.read_sealed_json(marker, "marker", 2)
    m["provenance"]["library_version"] = "0.0.1"
    _io.atomic_write_sealed_json(marker, {k: v for k, v in m.items() if k not in _io.SEAL_FIELDS}, 2)
    ran, warned = _rerun(copy, mnist, force=("report",))
    assert ran == {"report"} and not warned  # the marker's seal holds: the step itself is not redone
    section = (copy / "report.md").read_text().split("## Provenance")[1]
    assert "earlier invocation" in section and "| fig4 | 0.0.1 |" in section
