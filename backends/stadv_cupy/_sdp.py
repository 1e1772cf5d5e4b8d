r"""Section 4.1 SDP kernels of the CuPy backend (array-module generic; see :mod:`stadv_ref.sdp`).

Placeholder until :mod:`stadv_ref.sdp` defines the reference semantics.
"""
from __future__ import annotations


def sdp_mixing(xp, A, S, T, max_iter, tol):
    """Mixing-method block ascent (not implemented on the GPU yet)."""
    raise NotImplementedError("sdp_mixing is not implemented in the cupy backend yet")


def lambda_max_upper(xp, S):
    """Upper bound on the largest eigenvalue (not implemented on the GPU yet)."""
    raise NotImplementedError("lambda_max_upper is not implemented in the cupy backend yet")
