r"""The ``stadv`` command line: train, attack, bound, certify, reproduce and audit.

The top layer of the package: it may import every other part of it. :mod:`.main` holds the
parser and the entry point, :mod:`.commands` the subcommands, :mod:`._common` the shared
argument types, errors, model and data loading.

Run ``stadv --help`` or ``stadv COMMAND --help``. Every subcommand reads and
writes plain files: models and data as ``.npz`` (no pickle), results as JSON,
figures as PNG, all into ``--out DIR``.

Errors in the arguments or the inputs print one line on stderr and exit with
status 1 (usage errors: status 2); set ``STADV_DEBUG=1`` for a traceback. A bad
file (0-byte, truncated, not an ``.npz``, pickled, changed after it was written)
is such an error, naming the file; a damaged cache file (bound cache, cached
model, step output) is recomputed with a one-line warning instead.

The JSON and ``.npz`` results are written atomically and sealed with a
``format_version``, the ``library_version`` and the ``sha256`` of their content.

Models
------
A model is an ``.npz`` with arrays ``W`` (m, d), ``v`` ((m,) binary or (K, m)),
optional ``b`` (m,), ``c`` ((K,) or scalar) and ``image_shape`` (2,): the
network ``f(x) = v relu(W x + b) + c`` on ``H x W`` images flattened row-major
(:class:`stadv_ref.OneHiddenLayerNet`). Networks trained elsewhere can be saved
in that form with NumPy alone, or converted from ONNX with ``stadv import-onnx``
(needs ``pip install "stadv-ref[onnx]"``).

Data
----
``--data FILE.npz`` with arrays ``X`` ((N, H, W) or (N, d), values in [0, 1])
and ``y`` ((N,) integer labels), or MNIST from ``--data-dir`` /
``STADV_DATA_DIR`` with ``--split`` and ``--n``.
"""
from __future__ import annotations

from .main import build_parser, load_data, main

__all__ = ["main", "build_parser", "load_data"]
