#!/usr/bin/env python
"""Benchmarks against torchvision and pycocotools:
``python tools/benchmark.py SUITE [--json OUT] [--threads N] [--quick]`` (see docs/BENCHMARKS.md)."""
from detect.cli.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
