"""Explicit 4-lane vector code for channel-interleaved planes (``llvmlite`` IR).

Numba has no vector types, and LLVM's SLP vectorizer leaves the per-pixel
channel arithmetic of :mod:`._warp_packed` scalar. These two intrinsics work on
a *packed* padded plane ``P (HWp, 4)``: row ``q`` holds the up-to-four
channels of padded pixel ``q`` (unused lanes are zero), so each corner of a
pixel is one 4-lane load (and, for the adjoint, one 4-lane load-add-store)
for all channels at once, instead of one gather or scalar access per channel.

Each lane computes exactly the reference's scalar expression in the same
order with the same roundings (``fmul``/``fadd``/``fsub`` without fast-math
flags, so no FMA contraction), and the flow gradient is summed over the
channels in order, ``((c0 + c1) + c2) + c3``: results equal the planar
kernels bit for bit.

No bounds checks: callers pass corner offsets inside the padded plane (see
:mod:`._warp`, "Padded planes").
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic

LANES = 4
"""Channels per packed pixel."""

_I32 = ir.IntType(32)


def _packed_ok(P, *scalars):
    """Typing guard: ``P`` a C-contiguous 2-D float array and scalars of its dtype.

    Typing cannot see shapes: callers must pass planes of shape ``(HWp, LANES)``
    (row ``q`` starts at element ``LANES * q``) and rows inside them.
    """
    return (
        isinstance(P, types.Array) and P.ndim == 2 and P.layout == "C" and isinstance(P.dtype, types.Float)
        and all(s == P.dtype for s in scalars)
    )


def _row_ptr(context, builder, aryty, ary_val, q):
    """Pointer to the 4-lane vector at row ``q`` of the packed plane ``ary_val``."""
    ary = context.make_array(aryty)(context, builder, ary_val)
    ptr = builder.gep(ary.data, [builder.mul(q, ir.Constant(q.type, LANES))], inbounds=True)
    return builder.bitcast(ptr, ir.VectorType(ary.data.type.pointee, LANES).as_pointer())


def _splat(builder, v):
    """``<v, v, v, v>``."""
    vt = ir.VectorType(v.type, LANES)
    u = builder.insert_element(ir.Constant(vt, ir.Undefined), v, _I32(0))
    return builder.shuffle_vector(u, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))


def _corner_rows(context, builder, sig_q0, sig_wp, q0, wp):
    """Rows of the corners 00, 01, 10, 11: ``q0, q0+1, q0+Wp, q0+Wp+1`` (unsigned)."""
    q0 = context.cast(builder, q0, sig_q0, types.uint64)
    wp = context.cast(builder, wp, sig_wp, types.uint64)
    one = ir.Constant(q0.type, 1)
    q2 = builder.add(q0, wp)
    return [q0, builder.add(q0, one), q2, builder.add(q2, one)]


def _align(P):
    return P.dtype.bitwidth // 8


@intrinsic
def sample4(typingctx, P, q0, wp, w0, w1, w2, w3):
    """Bilinear sample of all lanes of the packed plane ``P`` at corner-00 row ``q0``.

    Returns the 4-tuple ``w0 P[q0] + w1 P[q0+1] + w2 P[q0+wp] + w3 P[q0+wp+1]``
    (summed left to right), one value per channel lane.
    """
    if not (_packed_ok(P, w0, w1, w2, w3) and isinstance(q0, types.Integer) and isinstance(wp, types.Integer)):
        return None
    sig = types.UniTuple(P.dtype, LANES)(P, q0, wp, w0, w1, w2, w3)

    def codegen(context, builder, signature, args):
        rows = _corner_rows(context, builder, signature.args[1], signature.args[2], args[1], args[2])
        acc = None
        for q, w in zip(rows, args[3:]):
            x = builder.load(_row_ptr(context, builder, signature.args[0], args[0], q), align=_align(P))
            t = builder.fmul(_splat(builder, w), x)
            acc = t if acc is None else builder.fadd(acc, t)
        return context.make_tuple(builder, signature.return_type,
                                  [builder.extract_element(acc, _I32(i)) for i in range(LANES)])

    return sig, codegen


@intrinsic
def vjp_both4(typingctx, P, A, q0, wp, C, g0, g1, g2, g3, w0, w1, w2, w3, d4, d5, d6, d7):
    """One pixel of the fused backward of the bilinear warp on packed planes.

    ``P`` holds the image and ``A`` accumulates the adjoint (both packed,
    ``(HWp, 4)``); ``C`` (a literal 1..4) is the number of channels,
    ``g0..g3`` the pixel's cotangents per channel (those past ``C`` are
    ignored), ``w0..w3`` its bilinear weights and ``d4..d7`` its derivative
    factors (see :func:`._warp._setup`). Adds ``g w_k`` to the four corner rows
    of ``A`` (lanes past ``C`` add zero) and returns ``(su, sv)``, the flow
    gradient summed over the ``C`` channels in order, with per channel
    ``su = g (d4 (x01 - x00) + d5 (x11 - x10))`` and
    ``sv = g (d6 (x10 - x00) + d7 (x11 - x01))``.
    """
    scal = (g0, g1, g2, g3, w0, w1, w2, w3, d4, d5, d6, d7)
    if not (_packed_ok(P, *scal) and A == P and isinstance(q0, types.Integer) and isinstance(wp, types.Integer)
            and isinstance(C, types.IntegerLiteral) and 1 <= C.literal_value <= LANES):
        return None
    nc = C.literal_value
    sig = types.UniTuple(P.dtype, 2)(P, A, q0, wp, C, *scal)

    def codegen(context, builder, signature, args):
        rows = _corner_rows(context, builder, signature.args[2], signature.args[3], args[2], args[3])
        g, w, d = args[5:9], args[9:13], args[13:17]
        vt = ir.VectorType(g[0].type, LANES)
        G = ir.Constant(vt, [0.0] * LANES)
        for i in range(nc):
            G = builder.insert_element(G, g[i], _I32(i))
        x00, x01, x10, x11 = (
            builder.load(_row_ptr(context, builder, signature.args[0], args[0], q), align=_align(P)) for q in rows
        )
        for q, wk in zip(rows, w):
            pa = _row_ptr(context, builder, signature.args[1], args[1], q)
            a = builder.load(pa, align=_align(P))
            builder.store(builder.fadd(a, builder.fmul(G, _splat(builder, wk))), pa, align=_align(P))

        def lane_sum(v):
            acc = builder.extract_element(v, _I32(0))
            for i in range(1, nc):
                acc = builder.fadd(acc, builder.extract_element(v, _I32(i)))
            return acc

        sd = [_splat(builder, v) for v in d]
        su = builder.fmul(G, builder.fadd(builder.fmul(sd[0], builder.fsub(x01, x00)),
                                          builder.fmul(sd[1], builder.fsub(x11, x10))))
        sv = builder.fmul(G, builder.fadd(builder.fmul(sd[2], builder.fsub(x10, x00)),
                                          builder.fmul(sd[3], builder.fsub(x11, x01))))
        return context.make_tuple(builder, signature.return_type, [lane_sum(su), lane_sum(sv)])

    return sig, codegen
