r"""The ``stadv`` command line: train, attack, bound, certify, reproduce, audit, info and data.

The top layer of the package: it may import every other part of it. :mod:`.main` holds the
parser and the entry point, :mod:`.commands` the computing subcommands, :mod:`.tools` the others
(reproduce, audit, info, import-onnx, data download/check), :mod:`._common` the shared argument
types, errors, model and data loading and the output writers.

Run ``stadv --help`` or ``stadv COMMAND --help``. Every subcommand reads and
writes plain files: models and data as ``.npz`` (no pickle), results as JSON,
per-image results as CSV beside the JSON (``attack``, ``certify``), figures as
PNG, all into ``--out DIR``. Each command takes ``--backend`` and only the
options it uses.

Errors in the arguments or the inputs print one line on stderr and exit with
status 1 (usage errors: status 2); set ``STADV_DEBUG=1`` for a traceback. A bad
file (0-byte, truncated, not an ``.npz``, pickled, changed after it was written)
is such an error, naming the file; a damaged cache file (bound cache, cached
model, step output) is recomputed with a one-line warning instead. A command
that fails removes the output directory it created (``train``, ``reproduce``
and ``data download`` keep it when it holds files a rerun resumes from). Missing
MNIST files name the fix: ``stadv data download`` or ``--data-dir``.

The JSON and ``.npz`` results are written atomically and sealed with a
``format_version``, the ``library_version`` and the ``sha256`` of their content;
every JSON result carries a ``provenance`` block (library version, git commit,
backend, thread counts, package versions, seed, command line) inside the seal.

Models
------
A model is an ``.npz`` with arrays ``W`` (m, d), ``v`` ((m,) binary or (K, m)),
optional ``b`` (m,), ``c`` ((K,) or scalar) and ``image_shape`` (2,): the
network ``f(x) = v relu(W x + b) + c`` on ``H x W`` images flattened row-major
(:class:`stadv_ref.OneHiddenLayerNet`). Networks trained elsewhere can be saved
in that form with NumPy alone, or converted from ONNX with ``stadv import-onnx``
(needs the ``onnx`` package: the ``[onnx]`` extra).

Data
----
``--data FILE.npz`` with arrays ``X`` ((N, H, W) or (N, d), values in [0, 1])
and ``y`` ((N,) integer labels), or MNIST from ``--data-dir`` /
``STADV_DATA_DIR`` with ``--split``, ``--n`` and ``--offset`` (``stadv data download``
fetches the IDX files, ``stadv data check DIR`` verifies them).
"""
from __future__ import annotations

from .main import build_parser, load_data, main

__all__ = ["main", "build_parser", "load_data"]
