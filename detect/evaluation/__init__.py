"""Per-head COCO evaluation (bbox, keypoints, class-agnostic boxes, classification)."""
from detect.evaluation.coco_eval import evaluate
from detect.evaluation.gt import merge_annotation_files
from detect.evaluation.predictions import load_predictions
from detect.evaluation.table import format_table

__all__ = ["evaluate", "format_table", "load_predictions", "merge_annotation_files"]
