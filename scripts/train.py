#!/usr/bin/env python
"""Same as `zoo train`: see `python scripts/train.py --help`."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zoo.train.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
