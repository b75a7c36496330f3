#!/usr/bin/env python
"""Train a detector: ``python tools/train.py --config CFG [--out RUN_DIR] [key=value ...]``."""
from detect.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
