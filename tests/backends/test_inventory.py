"""Cross-backend checks derived from the kernel inventory (:data:`stadv_ref.kernels.INVENTORY`).

One Hypothesis test runs every kernel of the inventory on every available backend with
the inventory's own example arguments and compares the result with the kernel's
reference in the style of scipy's ``xp_assert_close`` (array type, shape, dtype, then
values within the inventory's tolerance). A kernel added to the inventory is
cross-checked here without writing a test; the hand-written properties (edge cases of
the warp, channel paths, convergence criteria) live in ``test_crosscheck.py``.
The README's backend contract table is rendered from the same inventory.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stadv_ref
from stadv_ref.kernels import INVENTORY, KERNELS, collect_kernels, contract_table, kernel_info

COMPUTE = [k for k in INVENTORY if k.example is not None]
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
REPO = Path(__file__).resolve().parents[2]


def _scale(args):
    """Magnitude of the inputs: an entry of a result sums terms bounded by products of it."""
    mags = [float(np.abs(a).max()) for a in args if isinstance(a, np.ndarray) and a.size]
    return max([1.0] + mags) ** 2


def _assert_close(actual, desired, be, rtol, scale, what):
    if isinstance(desired, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(desired), f"{what}: result is not a {len(desired)}-tuple"
        for i, (a, d) in enumerate(zip(actual, desired)):
            _assert_close(a, d, be, rtol, scale, f"{what}[{i}]")
        return
    if isinstance(desired, np.ndarray):
        assert isinstance(actual, be.xp.ndarray), f"{what}: {type(actual).__name__} is not {be.xp.__name__}.ndarray"
        assert tuple(actual.shape) == desired.shape, f"{what}: shape {tuple(actual.shape)} != {desired.shape}"
        assert actual.dtype == desired.dtype, f"{what}: dtype {actual.dtype} != {desired.dtype}"
        np.testing.assert_allclose(be.to_numpy(actual), desired, rtol=rtol, atol=rtol * scale, err_msg=what)
    elif isinstance(desired, (int, np.integer)) and not isinstance(desired, bool):
        assert int(actual) == int(desired), f"{what}: {actual} != {desired}"
    else:
        assert float(actual) == pytest.approx(float(desired), rel=rtol, abs=rtol * scale), what


@pytest.mark.parametrize("info", COMPUTE, ids=[k.name for k in COMPUTE])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_kernel_matches_its_reference(backend, info, dtype, seed):
    if info.float64_only and dtype is np.float32:
        pytest.skip(f"{info.name} is defined on float64 only")
    be = stadv_ref.get_backend(backend)
    args = info.example(np.random.default_rng(seed), np.dtype(dtype))
    desired = info.reference(*args)
    call = [be.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
    actual = getattr(be, info.name)(*call)
    rtol = info.rtol.get(np.dtype(dtype), info.rtol.get(np.dtype(np.float64)))
    _assert_close(actual, desired, be, rtol, _scale(args), f"{backend}.{info.name}")
    for a, c in zip(args, call):  # kernels never modify their inputs
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(be.to_numpy(c), a)


def test_every_backend_provides_exactly_the_inventory(backend):
    be = stadv_ref.get_backend(backend)
    assert [k for k in KERNELS if not callable(getattr(be, k, None))] == []
    assert be.name == backend


def test_inventory_names_are_unique_and_documented():
    assert len(set(KERNELS)) == len(KERNELS)
    for k in INVENTORY:
        assert k.equation and k.signature.startswith(k.name) and k.doc, k.name
        assert kernel_info(k.name) is k
    with pytest.raises(KeyError, match="unknown kernel 'nope'"):
        kernel_info("nope")


def test_collect_kernels_names_what_is_missing():
    ns = {k.name: k.reference for k in INVENTORY if k.name != "warp"}
    with pytest.raises(TypeError, match=r"\['warp'\]"):
        collect_kernels("partial", np, ns)
    full = collect_kernels("full", np, {**ns, "warp": kernel_info("warp").reference}, extra_thing=1)
    assert full.extra_thing == 1 and full.name == "full"


def test_readme_contract_table_is_rendered_from_the_inventory():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- contract-table:start -->\n(.*?)\n<!-- contract-table:end -->", text, re.S)
    assert m, "README.md lacks the generated backend contract table"
    assert m.group(1).strip() == contract_table().strip(), (
        "README contract table is stale: regenerate with "
        "python -c 'import stadv_ref.kernels as k; print(k.contract_table())'")
