#!/usr/bin/env python
"""Export a checkpoint: ``python tools/export.py --checkpoint CKPT --format onnx --out FILE``."""
from detect.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
