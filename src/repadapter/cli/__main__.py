"""``python -m repadapter.cli``: the same command line as the ``repadapter`` script."""

import sys

from repadapter.cli import main

sys.exit(main())
