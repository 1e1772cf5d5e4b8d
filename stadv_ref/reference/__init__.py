"""The NumPy/SciPy reference kernels: the specification every backend is judged against.

One module per paper section; each imports nothing from :mod:`stadv_ref` but input
validation:

=================================  =============================================
:mod:`~stadv_ref.reference.warp`        Eq. (1): bilinear warp, its VJPs, [E6] tied Jacobian
:mod:`~stadv_ref.reference.smoothness`  Eq. (2), Prop. 1: neighbour matrices, ``L``, flow losses
:mod:`~stadv_ref.reference.operators`   Eq. (3), Prop. 2: ``L^p`` (Kronecker sum), AABB radii
:mod:`~stadv_ref.reference.network`     the one-hidden-layer network's passes
:mod:`~stadv_ref.reference.sdp`         Sec. 4.1: mixing-method kernel, proven ``lambda_max``
:mod:`~stadv_ref.reference.local`       issue #21: quadratic forms of the per-image certificate
=================================  =============================================

The kernel inventory :data:`stadv_ref.kernels.INVENTORY` pairs each backend kernel
with its reference here and builds the ``numpy`` backend from them.
"""
