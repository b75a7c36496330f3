#!/usr/bin/env python
"""Per-head COCO evaluation: ``python tools/eval.py --checkpoint CKPT --images DIR --annotations JSON``
or ``python tools/eval.py --predictions predictions.json --annotations JSON [JSON ...]``."""
from detect.cli.eval import main

if __name__ == "__main__":
    raise SystemExit(main())
