#!/usr/bin/env python
"""Convert labels: ``python tools/convert.py voc2coco|yolo2coco|coco2yolo ...`` (see
``detect/cli/convert.py`` for the options and ``detect/formats/`` for the conventions)."""
from detect.cli.convert import main

if __name__ == "__main__":
    raise SystemExit(main())
