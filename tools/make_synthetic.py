"""Writes the synthetic COCO-format sample dataset (see data/README.md).

    python tools/make_synthetic.py --out data/synthetic --train 400 --val 100 --size 320 --seed 0
"""
from __future__ import annotations

import argparse
import time

from detect.data.synthetic.write import generate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/synthetic", help="output folder")
    parser.add_argument("--train", type=int, default=400, help="number of train images")
    parser.add_argument("--val", type=int, default=100, help="number of val images")
    parser.add_argument("--size", type=int, default=320, help="side of the square images, pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.train < 0 or args.val < 0:
        parser.error("--train and --val must be >= 0")
    if args.size < 64:
        parser.error(f"--size must be >= 64, got {args.size}")
    start = time.perf_counter()
    paths = generate(args.out, args.train, args.val, args.size, args.seed)
    took = time.perf_counter() - start
    print(f"wrote {args.train} train + {args.val} val images to {args.out} in {took:.1f} s: "
          + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
