"""``python -m splatdistill``: the same as the ``splatdistill`` command."""

import sys

from splatdistill.cli import main

if __name__ == "__main__":
    sys.exit(main())
