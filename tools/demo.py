#!/usr/bin/env python
"""The demo behind ``make demo``: sample dataset -> train (a few CPU minutes) -> per-head
evaluation -> predictions drawn into RUN/vis/. Also draws a few augmented training samples into
RUN/samples/ so the data pipeline can be seen."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# torch, OpenCV and the package come after the arguments are parsed (--help at once)


def draw_samples(config: str, overrides: list[str], out: Path, n: int = 6) -> None:
    import cv2

    from detect.config import load_config
    from detect.data.build import build_dataset
    from detect.vis import draw_detections

    cfg = load_config(config, overrides)
    ds = build_dataset(cfg.data, cfg.data.train, train=True, seed=cfg.train.seed)
    out.mkdir(parents=True, exist_ok=True)
    kmeta = ds.ann.keypoints
    for i in range(min(n, len(ds))):
        s = ds[i]
        names = [ds.ann.categories.names[int(c)] for c in s.labels]
        img = draw_detections(s.image[..., ::-1], s.boxes, s.labels, names, None, s.keypoints,
                              kmeta.skeleton if kmeta else (), kpt_thresh=0)
        for x0, y0, x1, y1 in s.ignore_boxes.astype(int):
            cv2.rectangle(img, (x0, y0), (x1, y1), (128, 128, 128), 1)
        cv2.imwrite(str(out / f"sample_{i}.jpg"), img)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="data/synthetic")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    from detect.cli import eval as eval_cli
    from detect.cli import infer as infer_cli
    from detect.cli import train as train_cli

    d, run = Path(args.data), Path(args.out)
    data = [f"data.train.images={d / 'train'}", f"data.train.annotations=[{d / 'annotations/train.json'}]",
            f"data.val.images={d / 'val'}", f"data.val.annotations=[{d / 'annotations/val.json'}]"]
    overrides = data + args.overrides
    draw_samples(args.config, overrides, run / "samples")
    print(f"== augmented training samples -> {run / 'samples'}")
    rc = train_cli.main(["--config", args.config, "--out", str(run), *overrides])
    if rc:
        return rc
    ckpt = run / "best.pt" if (run / "best.pt").exists() else run / "last.pt"
    print(f"== evaluating {ckpt} on {d / 'val'}")
    rc = eval_cli.main(["--checkpoint", str(ckpt), "--images", str(d / "val"), "--annotations",
                        str(d / "annotations/val.json"), "--out", str(run / "metrics.json"),
                        "--mean-pose", str(d / "annotations/train.json"), "--oracle-handedness"])
    if rc:
        return rc
    print(f"== drawing predictions -> {run / 'vis'}")
    return infer_cli.main(["--checkpoint", str(ckpt), "--source", str(d / "val"), "--out", str(run)])


if __name__ == "__main__":
    sys.exit(main())
