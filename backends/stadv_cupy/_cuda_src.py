r"""CUDA C++ source of the warp kernels of Eq. (1) (compiled by CuPy's NVRTC).

This module is plain Python (no CuPy import) so the source can be compiled and
checked without a GPU: ``tests/backends/test_cupy_emulated.py`` compiles it with ``nvcc``
when one is installed and *runs* it on the CPU through a small C++ shim (one
emulated thread at a time), comparing every kernel with the NumPy reference of
:mod:`stadv_ref.transform`.

Conventions are those of :mod:`stadv_ref.transform`: images ``x (N, C, H, W)``,
flows ``(N, 2, H, W)`` with ``flow[:, 0] = du`` (columns) and ``flow[:, 1] = dv``
(rows), C-contiguous. One thread handles one output pixel ``(n, h, w)`` and
loops over the channels, so the four bilinear weights of Eq. (1) are computed
once per pixel. Every kernel uses a grid-stride loop, so any launch
configuration is correct. Integer arguments are ``long long`` (pass
``numpy.int64``). ``border`` is 0 (zero padding, the paper) or 1 (coordinates
clipped to the image, the public stAdv code; derivative 0 w.r.t. a clipped
coordinate, and, by the right-derivative convention, w.r.t. a coordinate
exactly on the last row/column). At integer sampling coordinates the derivatives are the right
derivatives (forward differences), as in the reference.

Kernels (templates over ``T in {float, double}`` and the index type
``I in {int, long long}``, retrieved with the name expressions of
:data:`NAME_EXPRESSIONS`; 32-bit index arithmetic is used whenever it cannot
overflow, since 64-bit integer division is slow on GPUs):

``stadv_warp_fwd<T, I>(x, flow, out, N, C, H, W, border)``
    ``out = g(flow; x)``.
``stadv_warp_vjp_x<T, I>(flow, g, gx, N, C, H, W, border)``
    ``gx += G(flow)^T g`` by ``atomicAdd`` scatter (``gx`` must be zeroed).
``stadv_warp_vjp_flow<T, I>(x, flow, g, gflow, N, C, H, W, border)``
    ``gflow = sum_c g * d out / d (du, dv)``.
``stadv_warp_vjp_both<T, I>(x, flow, g, gx, gflow, N, C, H, W, border)``
    Both VJPs in one pass (``gx`` must be zeroed).
``stadv_tied_jacobian_diag<T, I>(x, r, out, N, C, H, W, border, paper)``
    Diagonal of ``Dg`` for the tied flow ``du = dv = r`` ([E6]):
    ``d/d du + d/d dv`` (``paper = 0``) or the printed ``d/d du`` (``paper = 1``).
"""
from __future__ import annotations

KERNEL_NAMES = (
    "stadv_warp_fwd",
    "stadv_warp_vjp_x",
    "stadv_warp_vjp_flow",
    "stadv_warp_vjp_both",
    "stadv_tied_jacobian_diag",
)
"""Template kernels in :data:`SOURCE`."""

DTYPES = {"float32": "float", "float64": "double"}
"""NumPy dtype name -> C++ template argument."""

INDEX_TYPES = ("int", "long long")
"""Index types: ``int`` when ``max(N*C*H*W, N*2*H*W)`` plus one grid of threads
fits in 31 bits (see :func:`index_type`), ``long long`` otherwise."""

NAME_EXPRESSIONS = tuple(
    f"{k}<{t}, {i}>" for k in KERNEL_NAMES for t in DTYPES.values() for i in INDEX_TYPES
)
"""Name expressions to instantiate (``"stadv_warp_fwd<float, int>"`` ...)."""


def name_expression(kernel, dtype, n_elements, max_threads):
    """The template instance to launch for arrays of ``n_elements`` and a grid of ``max_threads``."""
    t = DTYPES[str(dtype)]
    return f"{kernel}<{t}, {index_type(n_elements, max_threads)}>"


def index_type(n_elements, max_threads):
    """``"int"`` when every offset and grid-stride index stays below ``2**31 - 1``."""
    return "int" if int(n_elements) + int(max_threads) < 2**31 - 1 else "long long"

SOURCE = r"""
// ---- stadv-ref: bilinear warp of Eq. (1) and its derivatives -------------
typedef long long stadv_ll;

__device__ __forceinline__ float stadv_floor(float v) { return floorf(v); }
__device__ __forceinline__ double stadv_floor(double v) { return floor(v); }

// I is the index type: int when every offset (plus one grid of threads) fits
// in 31 bits (cheap 32-bit division), long long otherwise.
#define STADV_GRID_LOOP(I, i, n)                                             \
    for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < (n);      \
         i += (I)blockDim.x * (I)gridDim.x)

// The four neighbours N(i) of one sampling point (u + du, v + dv).
// o** are offsets inside one (H, W) plane; v** say whether the corner lies
// inside the image (zero padding outside). fr, fc are the fractional parts;
// dcol_ok / drow_ok are 0 where border padding clipped the coordinate.
template <typename T, typename I>
struct StadvSample {
    I o00, o01, o10, o11;
    bool v00, v01, v10, v11;
    T fr, fc, dcol_ok, drow_ok;
};

template <typename T, typename I>
__device__ __forceinline__ void stadv_sample(T du, T dv, I h, I w, I H, I W, I border,
                                             StadvSample<T, I>& s) {
    T col = (T)w + du;
    T row = (T)h + dv;
    const T cmax = (T)(W - 1);
    const T rmax = (T)(H - 1);
    s.dcol_ok = (T)1;
    s.drow_ok = (T)1;
    if (border) {
        // right derivative: 0 from the last row/column on (a step right is clipped)
        if (!(col >= (T)0 && col < cmax)) s.dcol_ok = (T)0;
        if (!(row >= (T)0 && row < rmax)) s.drow_ok = (T)0;
        col = col < (T)0 ? (T)0 : (col > cmax ? cmax : col);
        row = row < (T)0 ? (T)0 : (row > rmax ? rmax : row);
    }
    const T c0f = stadv_floor(col);
    const T r0f = stadv_floor(row);
    s.fc = col - c0f;
    s.fr = row - r0f;
    // validity decided in floating point, so huge flows never overflow an int
    const bool c0ok = c0f >= (T)0 && c0f <= cmax;
    const bool c1ok = c0f >= (T)(-1) && c0f <= cmax - (T)1;
    const bool r0ok = r0f >= (T)0 && r0f <= rmax;
    const bool r1ok = r0f >= (T)(-1) && r0f <= rmax - (T)1;
    const I c0 = (c0ok || c1ok) ? (I)c0f : 0;
    const I r0 = (r0ok || r1ok) ? (I)r0f : 0;
    s.v00 = r0ok && c0ok;
    s.v01 = r0ok && c1ok;
    s.v10 = r1ok && c0ok;
    s.v11 = r1ok && c1ok;
    s.o00 = s.v00 ? r0 * W + c0 : 0;
    s.o01 = s.v01 ? r0 * W + c0 + 1 : 0;
    s.o10 = s.v10 ? (r0 + 1) * W + c0 : 0;
    s.o11 = s.v11 ? (r0 + 1) * W + c0 + 1 : 0;
}

template <typename T, typename I>
__device__ __forceinline__ void stadv_corners(const T* __restrict__ plane,
                                              const StadvSample<T, I>& s,
                                              T& x00, T& x01, T& x10, T& x11) {
    x00 = s.v00 ? plane[s.o00] : (T)0;
    x01 = s.v01 ? plane[s.o01] : (T)0;
    x10 = s.v10 ? plane[s.o10] : (T)0;
    x11 = s.v11 ? plane[s.o11] : (T)0;
}

// Bilinear weights of the corners 00, 01, 10, 11.
template <typename T, typename I>
__device__ __forceinline__ void stadv_weights(const StadvSample<T, I>& s, T& w00, T& w01, T& w10, T& w11) {
    w00 = ((T)1 - s.fr) * ((T)1 - s.fc);
    w01 = ((T)1 - s.fr) * s.fc;
    w10 = s.fr * ((T)1 - s.fc);
    w11 = s.fr * s.fc;
}

// Right derivatives of the warped value in du and dv from the four corners.
template <typename T, typename I>
__device__ __forceinline__ void stadv_dflow(const StadvSample<T, I>& s, T x00, T x01, T x10, T x11,
                                            T& d_du, T& d_dv) {
    d_du = (((T)1 - s.fr) * (x01 - x00) + s.fr * (x11 - x10)) * s.dcol_ok;
    d_dv = (((T)1 - s.fc) * (x10 - x00) + s.fc * (x11 - x01)) * s.drow_ok;
}

// Adjoint of the warp: scatter gv * w into the in-image corners of one plane.
template <typename T, typename I>
__device__ __forceinline__ void stadv_scatter(T* __restrict__ plane, const StadvSample<T, I>& s, T gv,
                                              T w00, T w01, T w10, T w11) {
    if (s.v00 && w00 != (T)0) atomicAdd(plane + s.o00, gv * w00);
    if (s.v01 && w01 != (T)0) atomicAdd(plane + s.o01, gv * w01);
    if (s.v10 && w10 != (T)0) atomicAdd(plane + s.o10, gv * w10);
    if (s.v11 && w11 != (T)0) atomicAdd(plane + s.o11, gv * w11);
}

// Thread i handles pixel p = (h, w) of image n (i = n * HW + p) and samples
// the flow there: DU, DV are expressions in n and p (the same for a tied flow).
#define STADV_PIXEL(I, i, DU, DV)                                            \
    const I n = i / HW;                                                      \
    const I p = i - n * HW;                                                  \
    const I h = p / Wi;                                                      \
    const I w = p - h * Wi;                                                  \
    StadvSample<T, I> s;                                                     \
    stadv_sample<T, I>(DU, DV, h, w, (I)H, Wi, (I)border, s);

template <typename T, typename I>
__global__ void stadv_warp_fwd(const T* __restrict__ x, const T* __restrict__ flow,
                               T* __restrict__ out, stadv_ll N, stadv_ll C,
                               stadv_ll H, stadv_ll W, stadv_ll border) {
    const I HW = (I)H * (I)W, Wi = (I)W, Ci = (I)C;
    STADV_GRID_LOOP(I, i, (I)N * HW) {
        STADV_PIXEL(I, i, flow[(2 * n) * HW + p], flow[(2 * n + 1) * HW + p])
        T w00, w01, w10, w11;
        stadv_weights<T, I>(s, w00, w01, w10, w11);
        for (I c = 0; c < Ci; ++c) {
            const I base = (n * Ci + c) * HW;
            T x00, x01, x10, x11;
            stadv_corners<T, I>(x + base, s, x00, x01, x10, x11);
            out[base + p] = w00 * x00 + w01 * x01 + w10 * x10 + w11 * x11;
        }
    }
}

template <typename T, typename I>
__global__ void stadv_warp_vjp_x(const T* __restrict__ flow, const T* __restrict__ g,
                                 T* __restrict__ gx, stadv_ll N, stadv_ll C,
                                 stadv_ll H, stadv_ll W, stadv_ll border) {
    const I HW = (I)H * (I)W, Wi = (I)W, Ci = (I)C;
    STADV_GRID_LOOP(I, i, (I)N * HW) {
        STADV_PIXEL(I, i, flow[(2 * n) * HW + p], flow[(2 * n + 1) * HW + p])
        T w00, w01, w10, w11;
        stadv_weights<T, I>(s, w00, w01, w10, w11);
        for (I c = 0; c < Ci; ++c) {
            const I base = (n * Ci + c) * HW;
            stadv_scatter<T, I>(gx + base, s, g[base + p], w00, w01, w10, w11);
        }
    }
}

template <typename T, typename I>
__global__ void stadv_warp_vjp_flow(const T* __restrict__ x, const T* __restrict__ flow,
                                    const T* __restrict__ g, T* __restrict__ gflow,
                                    stadv_ll N, stadv_ll C, stadv_ll H, stadv_ll W,
                                    stadv_ll border) {
    const I HW = (I)H * (I)W, Wi = (I)W, Ci = (I)C;
    STADV_GRID_LOOP(I, i, (I)N * HW) {
        STADV_PIXEL(I, i, flow[(2 * n) * HW + p], flow[(2 * n + 1) * HW + p])
        T acc_u = (T)0, acc_v = (T)0;
        for (I c = 0; c < Ci; ++c) {
            const I base = (n * Ci + c) * HW;
            T x00, x01, x10, x11, d_du, d_dv;
            stadv_corners<T, I>(x + base, s, x00, x01, x10, x11);
            stadv_dflow<T, I>(s, x00, x01, x10, x11, d_du, d_dv);
            const T gv = g[base + p];
            acc_u += gv * d_du;
            acc_v += gv * d_dv;
        }
        gflow[(2 * n) * HW + p] = acc_u;
        gflow[(2 * n + 1) * HW + p] = acc_v;
    }
}

template <typename T, typename I>
__global__ void stadv_warp_vjp_both(const T* __restrict__ x, const T* __restrict__ flow,
                                    const T* __restrict__ g, T* __restrict__ gx,
                                    T* __restrict__ gflow, stadv_ll N, stadv_ll C,
                                    stadv_ll H, stadv_ll W, stadv_ll border) {
    const I HW = (I)H * (I)W, Wi = (I)W, Ci = (I)C;
    STADV_GRID_LOOP(I, i, (I)N * HW) {
        STADV_PIXEL(I, i, flow[(2 * n) * HW + p], flow[(2 * n + 1) * HW + p])
        T w00, w01, w10, w11;
        stadv_weights<T, I>(s, w00, w01, w10, w11);
        T acc_u = (T)0, acc_v = (T)0;
        for (I c = 0; c < Ci; ++c) {
            const I base = (n * Ci + c) * HW;
            T x00, x01, x10, x11, d_du, d_dv;
            stadv_corners<T, I>(x + base, s, x00, x01, x10, x11);
            stadv_dflow<T, I>(s, x00, x01, x10, x11, d_du, d_dv);
            const T gv = g[base + p];
            acc_u += gv * d_du;
            acc_v += gv * d_dv;
            stadv_scatter<T, I>(gx + base, s, gv, w00, w01, w10, w11);
        }
        gflow[(2 * n) * HW + p] = acc_u;
        gflow[(2 * n + 1) * HW + p] = acc_v;
    }
}

template <typename T, typename I>
__global__ void stadv_tied_jacobian_diag(const T* __restrict__ x, const T* __restrict__ r,
                                         T* __restrict__ out, stadv_ll N, stadv_ll C,
                                         stadv_ll H, stadv_ll W, stadv_ll border,
                                         stadv_ll paper) {
    const I HW = (I)H * (I)W, Wi = (I)W, Ci = (I)C;
    STADV_GRID_LOOP(I, i, (I)N * HW) {
        STADV_PIXEL(I, i, r[i], r[i])
        for (I c = 0; c < Ci; ++c) {
            const I base = (n * Ci + c) * HW;
            T x00, x01, x10, x11, d_du, d_dv;
            stadv_corners<T, I>(x + base, s, x00, x01, x10, x11);
            stadv_dflow<T, I>(s, x00, x01, x10, x11, d_du, d_dv);
            out[base + p] = paper ? d_du : d_du + d_dv;
        }
    }
}
"""
"""The CUDA C++ source (self-contained: NVRTC compiles it without headers)."""
