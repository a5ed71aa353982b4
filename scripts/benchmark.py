#!/usr/bin/env python
"""Time zoo models against torchvision / timm / pytorchcv; writes docs/benchmarks.md.

Same as ``zoo benchmark``; see ``python scripts/benchmark.py --help``.
"""

import sys

from zoo.deploy.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
