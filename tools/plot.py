#!/usr/bin/env python
"""Charts of a training run: ``python tools/plot.py RUN_DIR`` -> RUN_DIR/plots/*.png."""
from detect.cli.plot import main

if __name__ == "__main__":
    raise SystemExit(main())
