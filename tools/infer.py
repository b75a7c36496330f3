#!/usr/bin/env python
"""Run a checkpoint on images: ``python tools/infer.py --checkpoint CKPT --source DIR --out OUT``."""
from detect.cli.infer import main

if __name__ == "__main__":
    raise SystemExit(main())
