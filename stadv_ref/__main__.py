"""``python -m stadv_ref ...``: the ``stadv`` command (:func:`stadv_ref.cli.main`) without its script."""
import sys

from stadv_ref.cli import main

if __name__ == "__main__":
    sys.exit(main())
