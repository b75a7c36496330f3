#!/usr/bin/env python
"""Dataset report: ``python tools/dataset.py report --annotations JSON [JSON ...] --images DIR
[--plots OUT_DIR] [--json OUT.json]`` (see ``detect/cli/dataset.py``)."""
from detect.cli.dataset import main

if __name__ == "__main__":
    raise SystemExit(main())
