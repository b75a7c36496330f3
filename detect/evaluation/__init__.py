"""Per-head COCO evaluation (bbox, keypoints, masks, class-agnostic boxes, classification).

Ground truth comes from `detect.data.annotations.merge_coco` (the same merge as training:
instances + person_keypoints by annotation id)."""
from detect.evaluation.coco_eval import evaluate
from detect.evaluation.predictions import load_predictions
from detect.evaluation.table import format_table

__all__ = ["evaluate", "format_table", "load_predictions"]
