"""``python -m zoo``: the same command as ``zoo``."""

import sys

from zoo.cli import main

sys.exit(main())
