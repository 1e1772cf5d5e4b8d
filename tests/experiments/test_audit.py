"""Tests of the numerical audit (``stadv audit``, :mod:`stadv_ref.audit`).

The audit must reach its verdicts from measurements: besides checking that the
report is complete and well-formed, these tests break the audited code on
purpose (monkeypatching the functions the audit measures) and require the
verdict to change.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import stadv_ref
from stadv_ref.cli import main
from stadv_ref.experiments import audit
from stadv_ref.experiments.audit import checks_lower, checks_transform, checks_upper

FAST = ["warp", "E1", "E2", "E3", "E4", "E11", "E6", "E7", "E8", "thm2", "E14"]


@pytest.fixture(scope="module")
def fast_findings():
    return {f.id: f for f in audit.run_audit(quick=True, only=FAST, progress=False)}


def test_fast_checks_reach_the_documented_verdicts(fast_findings):
    v = {k: f.verdict for k, f in fast_findings.items()}
    assert v["Eq. (1)"] == "holds"
    assert v["Eq. (2) [E1]"] == "ambiguous"
    assert v["Prop. 1 [E2]"] == "holds with correction"
    assert v["Prop. 1 proof [E3]"] == "holds with correction"
    assert v["Eq. (6)/(12) [E4]"] == "holds with correction"
    assert v["Prop. 2 [E11]"] == "holds with correction"
    assert v["Jacobian Dg [E6]"] == "holds with correction"
    assert v["Jacobian range [E7]"] == "holds with correction"
    assert v["Linearisation l~ [E8]"] == "fails"
    assert v["Thm. 2, Eq. (12)"] == "holds"
    assert v["Eqs. (6), (18), Sec. 6.6 [E14]"] == "holds with correction"


def test_findings_are_complete_and_serialisable(fast_findings):
    for f in fast_findings.values():
        assert f.verdict in audit.VERDICTS
        assert f.claim and f.paper and f.measured and f.criterion
        assert f.numbers, f.id
        json.dumps(f.numbers)


def test_measured_numbers_behind_key_verdicts(fast_findings):
    e3 = fast_findings["Prop. 1 proof [E3]"].numbers
    assert abs(e3["lambda_min_L"] - 0.0411) < 1e-4 and e3["diag_Z_measured"]["top"] == [2.0]
    e7 = fast_findings["Jacobian range [E7]"].numbers
    assert e7["sup_abs_dg_x_in_01"] == pytest.approx(2.0) and e7["sup_abs_dg_x_in_pm1"] == pytest.approx(4.0)
    e11 = fast_findings["Prop. 2 [E11]"].numbers
    assert 5.0 < e11["box_corner_budget_ratio"] < 5.5  # EQUATIONS.md: "about 5 at 28x28"


def test_prop3_counterexample_and_cycle():
    found = {f.id: f for f in audit.run_audit(quick=True, only=["E5", "E10"], progress=False)}
    e5 = found["Prop. 3 [E5]"]
    assert e5.verdict == "fails"
    assert e5.numbers["ratio"] == pytest.approx(np.sqrt(2), rel=1e-9)  # exact on the stripe construction
    assert e5.numbers["l_diff_untied"] == pytest.approx(e5.numbers["l_diff_tied"], rel=1e-9)
    e10 = found["Alg. 1 [E10]"]
    assert e10.verdict == "holds with correction" and e10.numbers["cycle"]["period"] >= 2


# -- the verdicts follow the measurements -------------------------------------
def test_broken_jacobian_flips_the_verdict(monkeypatch):
    real = checks_transform.tied_jacobian_diag
    monkeypatch.setattr(checks_transform, "tied_jacobian_diag",
                        lambda x, r, variant="correct", **k: real(x, r, variant="paper"))
    (f,) = audit.run_audit(only=["E6"], progress=False)
    assert f.verdict == "fails"


def test_wrong_smoothness_scaling_flips_the_verdict(monkeypatch):
    monkeypatch.setattr(checks_transform, "flow_tv", lambda flow: 3 * stadv_ref.flow_tv(flow))
    (f,) = audit.run_audit(only=["E2"], progress=False)
    assert f.verdict == "fails"


def test_bad_path_integral_flips_the_verdict(monkeypatch):
    monkeypatch.setattr(checks_lower, "adv_loss_path_integral",
                        lambda net, x, flow, n, **k: 1.01 * stadv_ref.adv_loss_exact(net, x, flow, **k))
    (f,) = audit.run_audit(quick=True, only=["eq4"], progress=False)
    assert f.verdict == "fails"


def test_unsound_bound_is_caught_by_the_attack(monkeypatch):
    pytest.importorskip("stadv_ref.upper_bounds")
    real = checks_upper._upper_bound

    def shrunk(net, eps, method, classes=None, input_range=(0, 1)):
        res = real(net, eps, method, classes, input_range)
        if method == "sdp":
            res.value = res.value / 20
        return res

    monkeypatch.setattr(checks_upper, "_upper_bound", shrunk)
    (f,) = audit.run_audit(quick=True, only=["sdp"], progress=False)
    assert f.verdict == "fails" and f.numbers["exceeded"] > 0


def test_failing_check_is_reported_not_hidden(monkeypatch):
    def broken(ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(audit, "CHECKS", audit.CHECKS + [("broken", broken)])
    found = audit.run_audit(only=["broken"], progress=False)
    assert found[0].verdict == "not run" and "boom" in found[0].measured


# -- the strong attack (deprecated alias of flow_pgd_attack) --------------------
def test_strong_attack_returns_a_feasible_pair_with_its_true_value():
    rng = np.random.default_rng(0)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((6, 36)) / 6, rng.standard_normal(6))
    for tied in (True, False):
        val, x, flow = audit.strong_attack(net, 0.7, tied_flow=tied, restarts=4, steps=40, seed=1)
        assert 0 <= x.min() and x.max() <= 1
        budget = stadv_ref.smoothness_norm(flow[0][None])[0] if tied else stadv_ref.smoothness_norm(flow[None])[0]
        assert budget <= 0.7 * (1 + 1e-9)
        assert val == pytest.approx(float(stadv_ref.adv_loss_exact(net, x, flow[None])[0]), abs=1e-12)
        assert val > 0


def test_strong_attack_beats_random_feasible_pairs():
    rng = np.random.default_rng(1)
    net = stadv_ref.OneHiddenLayerNet(rng.standard_normal((8, 36)) / 6, rng.standard_normal(8))
    best, _, _ = audit.strong_attack(net, 0.5, restarts=4, steps=60, seed=0)
    z = rng.standard_normal((200, 6, 6))
    r = stadv_ref.m_power(z, -1)
    r *= 0.5 / stadv_ref.smoothness_norm(r)[:, None, None]
    x = rng.uniform(0, 1, (200, 6, 6))
    assert best > stadv_ref.adv_loss_exact(net, x, r).max()


# -- report and CLI ---------------------------------------------------------------
def test_report_files(tmp_path, fast_findings):
    paths = audit.write_report(list(fast_findings.values()), tmp_path, seed=0, quick=True)
    md = (tmp_path / "audit.md").read_text()
    assert md.count("\n| ") >= len(fast_findings) + 1
    assert "| Claim | Paper says | Measured | Verdict |" in md and "## Criteria" in md
    data = json.loads((tmp_path / "audit.json").read_text())
    assert len(data["findings"]) == len(fast_findings)
    assert sum(data["verdicts"].values()) == len(fast_findings)
    assert paths["markdown"].endswith("audit.md")


def test_cli_audit(tmp_path, capsys):
    rc = main(["audit", "--quick", "--only", "E3", "E4", "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "holds with correction" in out and (tmp_path / "audit.md").is_file()


def test_cli_audit_exit_status_when_a_check_cannot_run(tmp_path, capsys):
    # in place: the CLI holds the registry list itself (its --only choices)
    audit.CHECKS.append(("broken", lambda ctx: 1 / 0))
    try:
        rc = main(["audit", "--only", "broken", "--out", str(tmp_path), "--no-progress"])
    finally:
        audit.CHECKS.pop()
    capsys.readouterr()
    assert rc == 1
