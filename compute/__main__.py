"""``python -m compute``: see :mod:`compute._cli`."""

import sys

from compute._cli import main

if __name__ == "__main__":
    sys.exit(main())
