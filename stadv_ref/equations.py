r"""Equation index: where each item of ``docs/EQUATIONS.md`` is implemented and tested.

:data:`ITEMS` holds one :class:`Item` per labelled item of ``docs/EQUATIONS.md``, in the page's order:
every numbered equation (``"Eq. (1)"`` ... ``"Eq. (18)"``), proposition (``"Prop. 1"``), theorem
(``"Thm. 1"``), algorithm (``"Alg. 1"``) and erratum (``"[E1]"`` ... ``"[E14]"``), the page's other bold
labels (``"Neighbour matrices"``, ``"Sec. 4.1"``, ``"Dual certificate"``, ...), the experiment sections
(``"Sec. 3.2"``, ...) and the figures (``"Fig. 2"``, ...), each with the code that implements it, the
tests that check it and the audit checks (``stadv audit``) that measure it. :func:`render_index` gives
``docs/EQUATION_INDEX.md`` (``python -m stadv_ref.equations > docs/EQUATION_INDEX.md``);
``tests/test_equation_index.py`` checks that the page, the registry, the code and the tests agree.
Data only: imports nothing from :mod:`stadv_ref` (bottom layer).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Item", "ITEMS", "item", "render_index"]


@dataclass(frozen=True)
class Item:
    """One labelled item of ``docs/EQUATIONS.md``.

    Attributes
    ----------
    key : str
        The label, normalised: ``"Eq. (n)"`` for ``[n]``, ``"Prop. n"``, ``"Thm. n"``, ``"Alg. n"``,
        ``"[En]"``, ``"Sec. n.m"``, ``"Fig. n"``; other bold labels verbatim.
    statement : str
        One line: what the item says (for an erratum, with the project's correction).
    code, tests, audit : tuple of str
        Dotted paths of the functions and classes that implement it; pytest node ids
        (``tests/x.py::test_y``) that check it; keys of the audit checks that measure it.
    note : str
        A remark shown in the index (required when ``code`` or ``tests`` is empty).
    """

    key: str
    statement: str
    code: tuple = ()
    tests: tuple = ()
    audit: tuple = ()
    note: str = ""


def _expand(text, sep):
    """Words of ``text``; one starting with ``sep`` takes the prefix of the word before it.

    ``"stadv_ref.smoothness.flow_tv .flow_tv_grad"`` and ``"tests/x.py::test_a ::test_b"`` name two each.
    """
    out = []
    for word in text.split():
        if word.startswith(sep) and out:
            word = out[-1].rpartition(sep)[0] + word
        out.append(word)
    return tuple(out)


def _item(key, statement, code="", tests="", audit="", note=""):
    """An :class:`Item` from whitespace-separated ``code`` paths, ``tests`` node ids and ``audit`` keys."""
    return Item(key, statement, _expand(code, "."), _expand(tests, "::"), tuple(audit.split()), note)


# A code path starting with "." is in the module of the path before it, a test id starting with "::" in the
# file of the id before it (see _expand).
ITEMS = (
    # -- Spatial transformation --------------------------------------------------------------------
    _item("Eq. (1)", "Bilinear warp `x~_i = sum_{j in N(i)} x_j max(0, 1-|u_i+du_i-u_j|) max(0, 1-|v_i+dv_i-v_j|)`.",
          "stadv_ref.transform.warp .warp_vjp_x .warp_vjp_flow .warp_matrix stadv_ref.reference.warp.warp_reference",
          "tests/test_transform.py::test_warp_matches_scipy_map_coordinates ::test_zero_flow_is_identity "
          "::test_integer_flow_is_a_shift ::test_warp_is_linear_in_x ::test_warp_matrix_agrees_with_warp "
          "::test_warp_vjp_x_dot_product_test ::test_warp_vjp_flow_matches_central_differences "
          "tests/backends/test_crosscheck.py::test_warp", "warp"),
    _item("zero padding", "Pixels outside the image contribute nothing (`grid_sample` zeros, `map_coordinates` "
          "grid-constant); the stAdv code's border clipping is an option, never the default.",
          "stadv_ref.transform.warp stadv_ref.reference.warp.warp_reference",
          "tests/test_transform.py::test_integer_flow_is_a_shift ::test_warp_matches_scipy_map_coordinates "
          "::test_border_padding_gradient_vanishes_where_clipped "
          "tests/upper_bounds/test_certification.py::test_certified_examples_survive_the_border_attack", "warp"),
    _item("Eq. (2)", "Flow smoothness `l_diff = sum_i sum_{j in N4(i)} (du_i-du_j)^2 + (dv_i-dv_j)^2`, zero flow "
          "outside.",
          "stadv_ref.smoothness.flow_tv .flow_tv_grad stadv_ref.reference.smoothness.flow_tv_reference",
          "tests/test_smoothness.py::test_flow_tv_untied_quadratic_form_and_double_loop "
          "::test_flow_tv_grad_matches_finite_differences tests/backends/test_crosscheck.py::test_flow_tv", "E1"),
    _item("[E1]", "Square root in Eq. (2) unreadable: the quadratic form is used (as Prop. 1 needs); stAdv's `sqrt(... "
          "+ 1e-8)` loss is separate.",
          "stadv_ref.smoothness.flow_tv .stadv_flow_loss",
          "tests/test_smoothness.py::test_flow_tv_untied_quadratic_form_and_double_loop "
          "::test_stadv_flow_loss_value_matches_double_loop ::test_stadv_flow_loss_default_is_paper_text_and_zero_flow "
          "tests/experiments/test_audit.py::test_fast_checks_reach_the_documented_verdicts", "E1"),
    _item("Neighbour matrices", "`M(t), M(b), M(l), M(r)`: row `i` is one-hot at `i`'s top/bottom/left/right "
          "neighbour, a zero row where it does not exist.",
          "stadv_ref.smoothness.neighbor_matrices",
          "tests/test_smoothness.py::test_neighbor_matrices_are_one_hot_rows_of_existing_neighbours"),
    _item("Prop. 1", "`L := M^T M := sum_k (I - M(k))^T (I - M(k))`; for a tied flow `l_diff = 2 r^T L r`.",
          "stadv_ref.smoothness.smoothness_matrix .flow_tv stadv_ref.transform.tied",
          "tests/test_smoothness.py::test_proposition_1_tied ::test_L_is_sum_of_neighbour_terms_and_a_kronecker_sum "
          "tests/experiments/test_audit.py::test_fast_checks_reach_the_documented_verdicts", "E2"),
    _item("Eq. (3)", "Budget `||M r||_2 <= eps`, `||M r||^2 = r^T L r`; untied: `||M du||^2 + ||M dv||^2 <= eps^2`.",
          "stadv_ref.operators.smoothness_norm .m_power",
          "tests/test_operators.py::test_smoothness_norm_squared_is_quadratic_form "
          "tests/lower_bounds/test_lower_bounds.py::test_theorem_pairs_feasible_without_tolerance "
          "::test_untied_at_least_tied"),
    _item("[E2]", "The paper scales `l_diff` three ways (`sqrt(2 r^T M^T M r)`, `||M r||`, `2 r^T M^T M r`); used: "
          "`l_diff = 2 r^T L r`, budget `||M r|| = sqrt(r^T L r)`.",
          "stadv_ref.smoothness.flow_tv stadv_ref.operators.smoothness_norm",
          "tests/test_smoothness.py::test_proposition_1_tied "
          "tests/experiments/test_audit.py::test_wrong_smoothness_scaling_flips_the_verdict "
          "::test_fast_checks_reach_the_documented_verdicts", "E2"),
    _item("[E3]", "The proof misstates the diagonal of `(I-M(t))^T (I-M(t))`; `L` is still positive definite (smallest "
          "eigenvalue about 0.041 at 28x28).",
          "stadv_ref.smoothness.smoothness_matrix stadv_ref.operators.SmoothnessOperator",
          "tests/test_smoothness.py::test_L_symmetric_positive_definite ::test_smallest_eigenvalue_at_28x28 "
          "tests/experiments/test_audit.py::test_measured_numbers_behind_key_verdicts", "E3"),
    _item("M is the symmetric square root", "`M = L^(1/2)`; `L = A_H (x) I_W + I_H (x) A_W` (Kronecker sum), so `L^p` "
          "and `diag(L^-1)` need two small eigendecompositions, no dense `d x d` matrix.",
          "stadv_ref.operators.m_power .SmoothnessOperator .smoothness_operator stadv_ref.smoothness.path_matrix "
          "stadv_ref.operators.dense_smoothness_power stadv_ref.reference.operators.smoothness_power_reference",
          "tests/test_operators.py::test_m_power_algebra ::test_m_power_matches_dense "
          "::test_dense_power_matches_explicit_sqrtm_and_inverse ::test_m_power_224x224 "
          "tests/test_smoothness.py::test_path_matrix_structure ::test_L_is_sum_of_neighbour_terms_and_a_kronecker_sum "
          "tests/backends/test_crosscheck.py::test_smoothness_power"),
    _item("[E4]", "`M^-1` is printed for `M^-T` (equal as `M` is symmetric): `r* = eps L^-1 a / sqrt(a^T L^-1 a)`.",
          "stadv_ref.operators.m_power stadv_ref.lower_bounds.flows.ellipsoid_argmax",
          "tests/test_operators.py::test_m_powers_are_symmetric_adjoint_test "
          "tests/lower_bounds/test_lower_bounds.py::test_ellipsoid_argmax_is_the_maximiser "
          "tests/experiments/test_audit.py::test_fast_checks_reach_the_documented_verdicts", "E4"),
    _item("Prop. 3", "(appendix) Extreme values of `l_adv` are attained at tied flows.",
          "stadv_ref.lower_bounds.lower_bound_attack stadv_ref.attacks.flow_pgd_attack",
          "tests/experiments/test_audit.py::test_prop3_counterexample_and_cycle "
          "tests/lower_bounds/test_lower_bounds.py::test_untied_at_least_tied", "E5"),
    _item("[E5]", "Prop. 3 is not true in general: at the same budget an untied flow can do more (`flow=\"untied\"` / "
          "`tied=False` options).",
          "stadv_ref.lower_bounds.lower_bound_attack stadv_ref.attacks.flow_pgd_attack",
          "tests/experiments/test_audit.py::test_prop3_counterexample_and_cycle "
          "tests/lower_bounds/test_lower_bounds.py::test_untied_at_least_tied "
          "tests/upper_bounds/test_closed_form.py::test_strong_attack_never_exceeds_sound_bounds", "E5"),
    # -- Adversarial loss --------------------------------------------------------------------------
    _item("Jacobian", "`Dg` of a tied flow is diagonal, `dg_i/dr_i = dx~_i/ddu_i + dx~_i/ddv_i`; one-sided "
          "(forward/backward image differences) at integer positions.",
          "stadv_ref.transform.tied_jacobian_diag .warp_vjp_flow stadv_ref.reference.warp.tied_jacobian_diag_reference",
          "tests/test_transform.py::test_tied_jacobian_diag_matches_finite_differences "
          "::test_subgradient_convention_right_derivative_at_integers "
          "::test_gradient_at_zero_flow_is_forward_image_difference "
          "tests/lower_bounds/test_lower_bounds.py::test_partial_derivatives_match_tied_jacobian "
          "tests/backends/test_crosscheck.py::test_tied_jacobian_diag", "E6"),
    _item("[E6]", "The printed `Dg` has only the `du` term (`variant=\"paper\"`, `jacobian=\"paper\"` reproduce it).",
          "stadv_ref.transform.tied_jacobian_diag stadv_ref.lower_bounds.lower_bound_attack",
          "tests/test_transform.py::test_tied_jacobian_diag_matches_finite_differences "
          "tests/lower_bounds/test_lower_bounds.py::test_paper_jacobian_option_runs "
          "tests/experiments/test_audit.py::test_broken_jacobian_flips_the_verdict", "E6"),
    _item("[E7]", "`|dg_i/dr_i| <= 2` holds for `x in [0,1]^d`; the tight constant is 4 for `||x||_inf <= 1`.",
          "stadv_ref.transform.tied_jacobian_diag stadv_ref.upper_bounds.input_constant",
          "tests/test_transform.py::test_tied_jacobian_bounded_by_2_on_unit_box "
          "::test_tied_jacobian_reaches_2_on_unit_box_and_4_on_pm1 "
          "tests/upper_bounds/test_closed_form.py::test_constant_for_input_range "
          "tests/experiments/test_audit.py::test_measured_numbers_behind_key_verdicts", "E7"),
    _item("Eq. (4)", "`l_adv(x, r) = f(g(r; x)) - f(x) = integral_0^1 grad(f o g)(z r; x)^T r dz`.",
          "stadv_ref.adversarial_loss.adv_loss_exact .adv_loss_path_integral .flow_gradient",
          "tests/test_adversarial_loss.py::test_exact_loss_is_the_definition "
          "::test_midpoint_rule_converges_to_exact_loss "
          "tests/experiments/test_audit.py::test_bad_path_integral_flips_the_verdict", "eq4"),
    _item("Eq. (7)", "Midpoint rule `r(i) = (2i-1)/(2n) r` for Eq. (4); its coefficients `alpha` of `x` (`dsigma` "
          "frozen) drive Algorithm 1's x-update.",
          "stadv_ref.adversarial_loss.adv_loss_path_integral stadv_ref.lower_bounds.lower_bound_attack "
          "stadv_ref.lower_bounds.flows.midpoint_flows stadv_ref.lower_bounds.objectives.probe",
          "tests/test_adversarial_loss.py::test_midpoint_rule_error_decreases_on_a_fixed_case "
          "tests/lower_bounds/test_lower_bounds.py::test_midpoint_matches_path_integral_and_alpha", "eq4"),
    _item("Eq. (13)", "Eq. (7) for a linear classifier `f = v^T x`: the midpoint rule, linear in `x` (coefficients).",
          "stadv_ref.adversarial_loss.adv_loss_path_integral stadv_ref.lower_bounds.linear_lower_bound_attack "
          "stadv_ref.lower_bounds.flows.midpoint_flows stadv_ref.lower_bounds.objectives.probe",
          "tests/test_adversarial_loss.py::test_midpoint_rule_exact_for_a_linear_integrand "
          "tests/lower_bounds/test_lower_bounds.py::test_x_coefficients_are_the_exact_linear_form", "eq4"),
    # -- Impossibility (lower bounds) --------------------------------------------------------------
    _item("Eq. (5)", "`l_adv = integral_0^1 dsigma^T diag(v) W Dg(z r) r dz` for `f = v^T sigma(W x)`; linearisation "
          "`l~ = dsigma(Wx)^T diag(v) W diag(x) r`.",
          "stadv_ref.adversarial_loss.flow_gradient .adv_loss_path_integral .adv_loss_linearized "
          "stadv_ref.network.OneHiddenLayerNet",
          "tests/test_adversarial_loss.py::test_flow_gradient_matches_finite_differences "
          "::test_linearized_is_the_printed_formula "
          "tests/test_network.py::test_input_gradient_matches_finite_differences"),
    _item("[E8]", "`l~` uses `Dg(0; x) = diag(x)`, not a derivative of `g`: the Theorems bound `l~` only; the true "
          "`l_adv` of the pair is reported; the first-order term is piecewise linear.",
          "stadv_ref.adversarial_loss.adv_loss_linearized .adv_loss_first_order "
          "stadv_ref.lower_bounds.LowerBoundResult stadv_ref.lower_bounds.objectives.linearized",
          "tests/test_adversarial_loss.py::test_linearized_is_not_the_derivative "
          "::test_first_order_is_the_directional_derivative "
          "tests/experiments/test_audit.py::test_fast_checks_reach_the_documented_verdicts", "E8 E8b"),
    _item("Thm. 1", "`sup l~ >= eps ||M^-1 diag(x*) W^T diag(v) dsigma(W x*)||`, `x* = pi_inf(W_d^-1 1)`.",
          "stadv_ref.lower_bounds.theorem1_input .lower_bound_attack",
          "tests/lower_bounds/test_lower_bounds.py::test_theorem1_pair_and_value ::test_theorem1_submatrix_when_m_ge_d "
          "::test_theorem1_below_brute_force_linearised_sup", "E9 E8b"),
    _item("Eq. (6)", "Theorem 1's flow `r* = eps M^-1 pi_2(M^-1 diag(x*) W^T diag(v) dsigma(W x*))`, `||M r*|| = eps`.",
          "stadv_ref.lower_bounds.lower_bound_attack stadv_ref.lower_bounds.flows.ellipsoid_argmax "
          "stadv_ref.lower_bounds.objectives.theorem_flow",
          "tests/lower_bounds/test_lower_bounds.py::test_theorem1_pair_and_value "
          "::test_theorem_pairs_feasible_without_tolerance", "E4 E14"),
    _item("[E9]", "Theorem 1 needs `rank W = d`, impossible for `m < d`; `x* = pi_inf(W^+ 1)` activates all `m` units "
          "when `W` has full row rank.",
          "stadv_ref.lower_bounds.theorem1_input",
          "tests/lower_bounds/test_lower_bounds.py::test_theorem1_pair_and_value ::test_theorem1_submatrix_when_m_ge_d",
          "E9"),
    _item("Alg. 1", "From Theorem 1's pair, alternate `x <- sign(alpha)` (Eq. (7), `dsigma` frozen) and Eq. (8).",
          "stadv_ref.lower_bounds.lower_bound_attack .LowerBoundResult",
          "tests/lower_bounds/test_lower_bounds.py::test_algorithm1_never_below_initialisation "
          "::test_feasible_and_exact_reproducible ::test_deterministic "
          "tests/cli/test_cli.py::test_lower_bound_pairs_are_feasible", "E10"),
    _item("Eq. (8)", "`r <- eps M^-1 pi_2(M^-1 sum_i Dg(r(i); x) W^T diag(v) dsigma(W g(r(i); x)))`.",
          "stadv_ref.lower_bounds.lower_bound_attack stadv_ref.lower_bounds.flows.ellipsoid_argmax "
          "stadv_ref.lower_bounds.alternating.run_alternating",
          "tests/lower_bounds/test_lower_bounds.py::test_ellipsoid_argmax_is_the_maximiser "
          "::test_midpoint_matches_path_integral_and_alpha ::test_algorithm1_never_below_initialisation"),
    _item("[E10]", "The x-update need not converge (it can cycle): cycles are detected, iterations capped, the best "
          "iterate by true `l_adv` kept.",
          "stadv_ref.lower_bounds.lower_bound_attack stadv_ref.lower_bounds.alternating.run_alternating",
          "tests/lower_bounds/test_lower_bounds.py::test_cycle_detected_on_absolute_value_network "
          "::test_cycle_period_bound_and_caps tests/experiments/test_audit.py::test_prop3_counterexample_and_cycle",
          "E10"),
    _item("Linear classifier", "`f = v^T x` on `H x W` images (Theorem 2, Algorithm 2, Eq. (16)).",
          "stadv_ref.network.LinearClassifier .as_linear_weights",
          "tests/lower_bounds/test_lower_bounds.py::test_algorithm2_as_relu_network_agrees "
          "tests/upper_bounds/test_closed_form.py::test_linear_classifier_bounds"),
    _item("Thm. 2", "`sup l~ >= eps ||M^-1 diag(v) x*||`, `x* = pi_inf(v*)`, `v*` top eigenvector of `diag(v) M^-2 "
          "diag(v)`.",
          "stadv_ref.lower_bounds.theorem2_input .linear_lower_bound_attack",
          "tests/lower_bounds/test_lower_bounds.py::test_theorem2_eigenvector_matches_dense "
          "::test_theorem2_below_brute_force", "thm2"),
    _item("Eq. (12)", "Theorem 2's flow `r* = eps M^-1 pi_2(M^-1 diag(v) x*)`.",
          "stadv_ref.lower_bounds.linear_lower_bound_attack stadv_ref.lower_bounds.flows.ellipsoid_argmax "
          "stadv_ref.lower_bounds.objectives.theorem_flow",
          "tests/lower_bounds/test_lower_bounds.py::test_theorem_pairs_feasible_without_tolerance "
          "::test_theorem2_below_brute_force "
          "tests/experiments/test_audit.py::test_fast_checks_reach_the_documented_verdicts", "thm2 E4"),
    _item("Alg. 2", "Algorithm 1 for `f = v^T x`: `x <- sign(alpha)` with Eq. (13), r-update Eq. (14).",
          "stadv_ref.lower_bounds.linear_lower_bound_attack",
          "tests/lower_bounds/test_lower_bounds.py::test_algorithm2_feasible_exact_and_monotone "
          "::test_algorithm2_as_relu_network_agrees"),
    _item("Eq. (14)", "Algorithm 2's r-update, Eq. (8) for `f = v^T x`: `r <- eps M^-1 pi_2(M^-1 sum_i Dg(r(i); x) v)`",
          "stadv_ref.lower_bounds.linear_lower_bound_attack stadv_ref.lower_bounds.flows.ellipsoid_argmax",
          "tests/lower_bounds/test_lower_bounds.py::test_algorithm2_feasible_exact_and_monotone "
          "::test_ellipsoid_argmax_is_the_maximiser"),
    _item("Multi-class (6.6)", "CW loss with `kappa = 0`; each step works on the two-class problem between the true "
          "class and the current runner-up.",
          "stadv_ref.lower_bounds.lower_bound_attack stadv_ref.adversarial_loss.cw_margin "
          "stadv_ref.lower_bounds.objectives.MulticlassObjective",
          "tests/lower_bounds/test_lower_bounds.py::test_multiclass_runner_up_pairs "
          "tests/test_adversarial_loss.py::test_cw_margin", "E14"),
    _item("[E14]", "Eq. (18) is printed as descent on a loss the attacker increases (sign); Eq. (6) as `W diag(v)` "
          "where `W^T diag(v)` is meant (dimensions).",
          "stadv_ref.lower_bounds.lower_bound_attack",
          "tests/lower_bounds/test_lower_bounds.py::test_multiclass_runner_up_pairs "
          "tests/experiments/test_audit.py::test_fast_checks_reach_the_documented_verdicts", "E14"),
    _item("Eq. (18)", "Appendix 6.6's multi-class step: ascent on the CW margin `f_i - f_y` (printed as descent, "
          "[E14]).",
          "stadv_ref.lower_bounds.lower_bound_attack",
          "tests/lower_bounds/test_lower_bounds.py::test_multiclass_runner_up_pairs "
          "tests/experiments/test_audit.py::test_fast_checks_reach_the_documented_verdicts", "E14"),
    # -- Possibility (upper bounds) ----------------------------------------------------------------
    _item("Prop. 2", "The bounding box of `||M r|| <= eps` is `|r_i| <= eps lambda_i`, `lambda_i = sqrt((L^-1)_ii)`.",
          "stadv_ref.operators.aabb_radii",
          "tests/test_operators.py::test_aabb_radii_match_direct_computation "
          "::test_aabb_box_is_attained_and_contains_the_ellipsoid", "E11 aabb"),
    _item("[E11]", "Prop. 2 is printed without `eps`; the radii scale linearly with `eps`.",
          "stadv_ref.operators.aabb_radii",
          "tests/test_operators.py::test_aabb_radii_match_direct_computation "
          "tests/upper_bounds/test_closed_form.py::test_aabb_uses_prop2_radii_with_eps "
          "tests/experiments/test_audit.py::test_measured_numbers_behind_key_verdicts", "E11"),
    _item("Sec. 4.1", "`l_adv <= 2 eps max s^T diag(v) W diag(lambda) t <= eps SDP(P)`, `P = [[0, A], [A^T, 0]]`, "
          "`SDP(P) = max tr(Z P)`, `diag(Z) <= 1`, `Z` psd; constant 4 on `[-1, 1]`.",
          "stadv_ref.upper_bounds.upper_bound .bipartite_matrix .solve_sdp .input_constant "
          "stadv_ref.reference.sdp.sdp_mixing_reference",
          "tests/upper_bounds/test_closed_form.py::test_sdp_bound_is_eps_times_sdp_value "
          "tests/upper_bounds/test_sdp.py::test_mixing_agrees_with_scs ::test_sdp_mixing_kernel_matches_definition "
          "tests/upper_bounds/test_closed_form.py::test_strong_attack_never_exceeds_sound_bounds "
          "::test_constant_for_input_range tests/experiments/test_audit.py::test_unsound_bound_is_caught_by_the_attack",
          "sdp aabb"),
    _item("Dual certificate", "For any `c`, `SDP(P) <= n max(0, lambda_max(P - diag(c))) + sum_i max(c_i, 0)`, `n = m "
          "+ d`, with `lambda_max` a guaranteed upper estimate.",
          "stadv_ref.upper_bounds.dual_bound .lambda_max_upper .solve_sdp .dual_bound_and_grad .sdp_dual_gradient "
          "stadv_ref.reference.sdp.lambda_max_upper_reference",
          "tests/upper_bounds/test_sdp.py::test_certificate_dominates_mixing_iterate_primal "
          "::test_lambda_max_upper_is_rigorous_and_tight ::test_dual_bound_and_grad_matches_finite_differences "
          "::test_sdp_dual_gradient_routes_agree_and_arpack_is_deterministic ::test_sdp_primal_lower_is_a_lower_bound "
          "tests/backends/test_crosscheck.py::test_lambda_max_upper_large_is_rigorous", "dual"),
    _item("Eq. (16)", "Linear classifier: `l_adv <= 2 eps ||v * lambda||_1`.",
          "stadv_ref.upper_bounds.upper_bound",
          "tests/upper_bounds/test_closed_form.py::test_linear_classifier_bounds", "eq16"),
    _item("Naive bounds (appendix)", "Printed spectral `eps ||W||_2 ||v||_2` and Frobenius `eps ||W||_F ||v||_2` (kept "
          "to show they fail) and their sound versions, e.g. `2 eps ||v||_2 ||W||_2 / sqrt(lambda_min(L))`.",
          "stadv_ref.upper_bounds.upper_bound",
          "tests/upper_bounds/test_closed_form.py::test_strong_attack_never_exceeds_sound_bounds "
          "::test_sound_bounds_hold_on_the_checkerboard ::test_paper_printed_bounds_fail_on_checkerboard "
          "::test_tight_never_looser_than_sdp_and_spectral",
          "E12-paper-spectral E12-paper-frobenius sound-spectral sound-frobenius sdp-tightest tight"),
    _item("[E12]", "The printed spectral and Frobenius bounds are not valid: a strong attack exceeds them (random "
          "networks; a checkerboard, by about 8).",
          "stadv_ref.upper_bounds.upper_bound",
          "tests/upper_bounds/test_closed_form.py::test_paper_printed_bounds_fail_on_checkerboard "
          "::test_paper_printed_bounds_fail_on_a_random_network", "E12-paper-spectral E12-paper-frobenius"),
    _item("Multi-class (6.7)", "`P_iy` uses `v_i - v_y`; `x` is certified when `f_y(x) - f_i(x) > eps SDP(P_iy)` for "
          "all `i != y`; the 0/1 loss is the fraction not certified.",
          "stadv_ref.upper_bounds.certify .class_pair_bounds .CertificationResult",
          "tests/upper_bounds/test_certification.py::test_certified_flags_follow_the_margin_test "
          "::test_certified_examples_survive_the_strong_attack ::test_loss_is_monotone_in_eps_and_methods_are_ordered "
          "tests/cli/test_cli.py::test_certify_zero_one_loss", "E13"),
    _item("[E13]", "The printed rule (\"the attack fails iff `max_i q_iy <= 0`\") never certifies; \"iff\" must be "
          "\"if\", with the margin test.",
          "stadv_ref.upper_bounds.certify",
          "tests/upper_bounds/test_certification.py::test_certified_flags_follow_the_margin_test "
          "::test_certified_examples_survive_the_strong_attack", "E13"),
    # -- Experiments -------------------------------------------------------------------------------
    _item("Sec. 3.2", "Lower bounds for MNIST networks nt, rand, at: Theorem 1 and Algorithm 1 vs `eps` (Figs. 2-4).",
          "stadv_ref.experiments.curves.lower_bound_curve stadv_ref.experiments.pipeline.reproduce "
          "stadv_ref.training.load_or_train",
          "tests/cli/test_cli.py::test_reproduce_runs_every_step_then_resumes ::test_presets_match_the_paper_scale"),
    _item("Sec. 4.2", "The 0/1 adversarial loss certified by each upper bound vs `eps`, trained networks (Figs. 5, "
          "11).",
          "stadv_ref.experiments.curves.certify_curve stadv_ref.upper_bounds.certify stadv_ref.training.train",
          "tests/cli/test_cli.py::test_reproduce_runs_every_step_then_resumes ::test_certify_zero_one_loss"),
    _item("Sec. 6.8", "The seven networks (nt, rand, fro, spe, stn, at, sdp) and stAdv (`L_adv + tau L_flow`, CW "
          "margin, L-BFGS) against each of them (Fig. 6).",
          "stadv_ref.training.train .VARIANTS .hinge_loss .sdp_pair_bounds stadv_ref.attacks.stadv_attack "
          ".stadv_objective stadv_ref.smoothness.stadv_flow_loss",
          "tests/training/test_trainer.py::test_variant_decreases_loss_and_learns "
          "::test_rand_is_the_untrained_initialisation ::test_fro_shrinks_frobenius_norm "
          "::test_spe_shrinks_spectral_norm ::test_stn_trains_a_transformer_and_deploys_the_classifier "
          "::test_sdp_lowers_the_dual_bound_and_stays_sound "
          "tests/attacks/test_stadv.py::test_objective_gradient_matches_finite_differences "
          "::test_successful_example_changes_prediction ::test_tau_controls_flow_size"),
    _item("Fig. 2", "Lower bound vs `eps` in [0, 7.84] for nt, rand, at.",
          "stadv_ref.experiments.curves.lower_bound_curve stadv_ref.experiments.plots.plot_lower_bound",
          "tests/cli/test_cli.py::test_reproduce_runs_every_step_then_resumes"),
    _item("Fig. 3", "Samples: benign input, adversarial input and flow found by Algorithm 1.",
          "stadv_ref.experiments.plots.plot_samples",
          "tests/cli/test_cli.py::test_reproduce_runs_every_step_then_resumes"),
    _item("Fig. 4", "Convergence of Algorithm 1 (best exact loss per outer iteration).",
          "stadv_ref.experiments.curves.lower_bound_curve stadv_ref.experiments.plots.plot_convergence",
          "tests/cli/test_cli.py::test_reproduce_runs_every_step_then_resumes "
          "tests/lower_bounds/test_lower_bounds.py::test_algorithm1_never_below_initialisation"),
    _item("Fig. 5", "0/1 adversarial loss from the paper's bounds (Frobenius, spectral, SDP) vs `eps`.",
          "stadv_ref.experiments.curves.certify_curve stadv_ref.experiments.plots.plot_certify",
          "tests/cli/test_cli.py::test_reproduce_runs_every_step_then_resumes"),
    _item("Fig. 11", "0/1 adversarial loss from every sound upper bound vs `eps`.",
          "stadv_ref.experiments.curves.certify_curve stadv_ref.experiments.plots.plot_certify "
          "stadv_ref.experiments.curves.soundness_spot_check",
          "tests/cli/test_cli.py::test_reproduce_runs_every_step_then_resumes"),
    _item("Fig. 6", "stAdv success rate and adversarial accuracy vs `tau` in [0, 0.1] for every variant.",
          "stadv_ref.experiments.curves.attack_curve stadv_ref.experiments.plots.plot_attack "
          "stadv_ref.attacks.stadv_attack",
          "tests/cli/test_cli.py::test_reproduce_runs_every_step_then_resumes "
          "::test_attack_success_flags_mean_a_changed_prediction"),
)
"""Every labelled item of ``docs/EQUATIONS.md``, in the page's order."""

_BY_KEY = {it.key: it for it in ITEMS}


def item(key):
    """The :class:`Item` labelled ``key`` (e.g. ``"Eq. (1)"``, ``"Prop. 2"``, ``"[E6]"``)."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"no item {key!r} in the equation index; known: {', '.join(_BY_KEY)}") from None


def _cell(text):
    return text.replace("|", "\\|")


def _codes(names):
    return "<br>".join(f"`{_cell(n)}`" for n in names) or "-"


def render_index():
    """The Markdown page ``docs/EQUATION_INDEX.md``: one table row per item (statement, code, tests, audit)."""
    lines = [
        "*Generated from `stadv_ref/equations.py` by `python -m stadv_ref.equations > docs/EQUATION_INDEX.md`; "
        "do not edit by hand (`tests/test_equation_index.py` fails when it is stale).*",
        "",
        "# Equation index",
        "",
        "Every labelled item of [EQUATIONS.md](EQUATIONS.md), the code that implements it, the tests that check it",
        "and the checks of the numerical audit (`stadv audit`, [audit.md](audit.md)) that measure it.",
        "",
        "| Item | Statement | Code | Tests | Audit |",
        "|---|---|---|---|---|",
    ]
    for it in ITEMS:
        statement = _cell(it.statement) + (f" *Note: {_cell(it.note)}*" if it.note else "")
        lines.append(f"| {_cell(it.key)} | {statement} | {_codes(it.code)} | {_codes(it.tests)} | {_codes(it.audit)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_index(), end="")
