"""``python -m fluxmatch``: the same command line as the ``fluxmatch`` script."""

import sys

from .cli import main

sys.exit(main())
