"""Per-head COCO evaluation from the command line.

    python tools/eval.py --predictions predictions.json \\
        --annotations instances_val2017.json person_keypoints_val2017.json \\
        [--backend faster|pycocotools] [--out metrics.json] [--kpt-sigmas S1 ... SK]
    python tools/eval.py --checkpoint CKPT --images DIR --annotations JSON [JSON ...]
        [--device cpu|cuda] [--batch N] [--save-predictions predictions.json]

With ``--checkpoint`` the model predicts every image of the annotation files (read and resized
as in training's validation) and every head evaluates itself (a head of one's own too, in a
script that calls ``main(argv, heads=[...])``); keypoint sigmas come from the checkpoint unless
``--kpt-sigmas`` is given. Images that cannot be
read are listed on stderr (``skipped image: <file>: <reason>``) and their objects count as missed.

``--mean-pose TRAIN_JSON`` evaluates the same detections a second time with the training set's
mean pose placed in each box (`detect.evaluation.mean_pose`): the keypoint head's floor, printed
as ``keypoints_mean_pose`` with the ``keypoint_margin`` over it. ``--oracle-handedness``
evaluates them with each pose's left/right pairs on the side that fits its ground truth
(`detect.evaluation.handedness`): ``keypoints_oracle`` and the ``handedness_gap``.

Prints a per-head table (and, with ``--out``, where the metrics went); ``--out`` writes the metrics
dict as JSON (atomically). A progress bar on stderr (a terminal only) counts the images predicted;
``--quiet`` prints nothing but warnings and errors. User errors print one line
``error: <file>: <problem>`` to stderr and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what it runs is imported after the arguments are parsed (--help at once)
    from detect.evaluation.mean_pose import MeanPose


class CliError(Exception):
    """A user error, already worded as ``<file>: <problem>``."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Per-head COCO evaluation of detections.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, help="COCO results JSON (list of records)")
    source.add_argument("--checkpoint", type=Path, help="a trained model (needs --images)")
    parser.add_argument("--images", type=Path, help="image folder (with --checkpoint)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--save-predictions", type=Path, help="with --checkpoint: write them here")
    parser.add_argument(
        "--annotations", type=Path, nargs="+", required=True,
        help="COCO ground-truth JSON file(s), merged by annotation id (instances + keypoints)",
    )
    parser.add_argument("--backend", choices=("faster", "pycocotools"), default="faster")
    parser.add_argument("--out", type=Path, help="write the metrics here as JSON")
    parser.add_argument("--kpt-sigmas", type=float, nargs="+", help="OKS sigmas, one per keypoint")
    parser.add_argument(
        "--mean-pose", type=Path, nargs="+", metavar="TRAIN_JSON",
        help="also evaluate the same detections with the mean pose of these (training) annotation "
             "files in each box instead of the predicted keypoints, and print the margin")
    parser.add_argument(
        "--oracle-handedness", action="store_true",
        help="also evaluate the same detections with each pose's left/right pairs on the side "
             "that fits its ground truth, and print the gap: what the handedness decision costs")
    parser.add_argument("--quiet", action="store_true", help="no table, no progress bar")
    return parser


def main(argv: list[str] | None = None, heads: Sequence = ()) -> int:
    """``heads``: builders of heads of the caller's that a ``--checkpoint`` was trained with
    (`detect.models.build.HeadFactory`); each head's own evaluation joins the table."""
    args = build_parser().parse_args(argv)
    try:
        gt = load_ground_truth(args.annotations)
        predictions, det = load_prediction_source(args, heads)
        metrics = run_evaluation(args, gt, predictions, det)
        if args.out is not None:
            write_json_atomic(args.out, metrics)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.quiet:
        from detect.evaluation import format_table
        print(format_table(metrics))
        if args.out is not None:
            print(f"metrics (per class and precision-recall curves too) -> {args.out}")
    return 0


def load_ground_truth(paths: list[Path]) -> dict:
    from detect.data.annotations import merge_coco
    try:
        return merge_coco(paths)
    except OSError as e:
        raise CliError(f"{e.filename}: {e.strerror}") from None
    except ValueError as e:
        raise CliError(str(e)) from None


def load_prediction_source(args: argparse.Namespace, heads: Sequence = ()):
    """(predictions, the detector or None): from ``--predictions`` or made by ``--checkpoint``
    on ``--images``."""
    if args.checkpoint is not None:
        return predict_with_checkpoint(args, heads)
    from detect.evaluation import load_predictions
    try:
        return load_predictions(args.predictions), None
    except OSError as e:
        raise CliError(f"{e.filename}: {e.strerror}") from None
    except ValueError as e:
        raise CliError(str(e)) from None


def predict_with_checkpoint(args: argparse.Namespace, heads: Sequence = ()):
    from detect.api import Detector
    from detect.cli.common import is_user_error
    from detect.data.build import EpochSampler, build_loader
    from detect.data.dataset import CocoDetection
    from detect.data.transforms import ValTransform
    from detect.engine.inference import predict_coco

    if args.images is None:
        raise CliError("--checkpoint needs --images DIR")
    try:
        det = Detector.from_checkpoint(args.checkpoint, device=args.device, heads=heads)
        ds = CocoDetection.from_files(args.images, [str(p) for p in args.annotations],
                                      ValTransform(det.image_size), keep_empty=True,
                                      max_pixels=det.cfg.data.max_pixels)
        if ds.ann.categories != det.categories:
            raise CliError(f"{args.annotations[0]}: categories differ from the checkpoint's")
        args.own_sigmas = args.kpt_sigmas is not None  # the user's, over the checkpoint's
        if args.kpt_sigmas is None and det.sigmas:
            args.kpt_sigmas = list(det.sigmas)
        loader = build_loader(ds, args.batch, EpochSampler(len(ds), False), 0,
                              det.cfg.data.size_divisor)
        skipped: list[str] = []
        preds = predict_coco(det.model, loader, det.params, det.categories, det.device, skipped,
                             progress=not args.quiet and sys.stderr.isatty())
    except Exception as e:
        if not is_user_error(e):
            raise
        raise CliError(str(e)) from None
    for line in skipped:  # their objects count as missed
        print(f"skipped image: {line}", file=sys.stderr)
    if args.save_predictions is not None:
        write_json_atomic(args.save_predictions, preds)
    args.predictions = args.checkpoint
    return preds, det


def run_evaluation(args: argparse.Namespace, gt: dict, predictions: list[dict],
                   det=None) -> dict:
    """The per-head metrics: each head's own evaluation with a checkpoint (``det``), COCO's
    evaluation of the records' fields (bbox, keypoints) for a predictions file."""
    from detect.evaluation import evaluate
    from detect.evaluation.coco_eval import keypoint_metrics
    from detect.evaluation.handedness import add_oracle_handedness
    from detect.evaluation.mean_pose import add_mean_pose
    try:
        if det is not None:  # every head's own evaluation
            from detect.engine.inference import evaluate_heads
            names = dict(zip(det.categories.ids, det.categories.names))
            metrics = evaluate_heads(det.model, gt, predictions, names, args.backend)
            if args.own_sigmas and "keypoints" in metrics:  # --kpt-sigmas applies to every row
                metrics["keypoints"] = keypoint_metrics(gt, predictions, args.backend,
                                                        args.kpt_sigmas)
        else:
            metrics = evaluate(gt, predictions, backend=args.backend, kpt_sigmas=args.kpt_sigmas)
    except ValueError as e:
        raise CliError(f"{args.predictions}: {e}") from None
    if args.mean_pose:
        pose = load_mean_pose(args.mean_pose)
        try:
            metrics = add_mean_pose(metrics, gt, predictions, pose, args.backend, args.kpt_sigmas)
        except ValueError as e:
            raise CliError(f"{args.mean_pose[0]}: {e}") from None
    if args.oracle_handedness:
        try:
            metrics = add_oracle_handedness(metrics, gt, predictions, args.backend,
                                            args.kpt_sigmas)
        except ValueError as e:
            raise CliError(f"{args.annotations[0]}: {e}") from None
    return metrics


def load_mean_pose(paths: list[Path]) -> MeanPose:
    """The mean pose of the keypoint annotations in ``paths`` (merged by annotation id)."""
    from detect.evaluation.mean_pose import mean_pose
    gt = load_ground_truth(paths)
    try:
        return mean_pose(gt)
    except ValueError as e:
        raise CliError(f"{paths[0]}: {e}") from None


def write_json_atomic(path: Path, data: dict) -> None:
    """`atomic_write_json`, with a file-system error as the user's one line."""
    from detect.io import atomic_write_json
    try:
        atomic_write_json(path, data, indent=2)
    except OSError as e:
        raise CliError(f"{path}: {e.strerror}") from None


if __name__ == "__main__":
    sys.exit(main())
