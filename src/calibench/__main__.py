"""``python -m calibench``: the same command line as the ``calibench`` script."""

from __future__ import annotations

import sys

from calibench.cli import main

if __name__ == "__main__":
    sys.exit(main())
