"""``python -m relpos``: the command line, also as torchrun starts it (``torchrun ... -m relpos train``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
