"""Rebuild the papers' tables (complexity always, accuracy with --imagenet) into docs/.

python scripts/reproduce_tables.py [--imagenet /path/to/imagenet/val]
"""

import sys

from zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", *sys.argv[1:]]))
