"""Task heads: one file each, all following the `Head` protocol in `base.py`."""
from detect.heads.base import BoxRegressionHead, Head, InstanceHead, ScoreHead, Selected, Tower
from detect.heads.box import BoxHead
from detect.heads.classification import ClassificationHead
from detect.heads.keypoints import KeypointHead
from detect.heads.masks import MaskHead

__all__ = ["Head", "ScoreHead", "BoxRegressionHead", "InstanceHead", "Selected", "Tower",
           "BoxHead", "ClassificationHead", "KeypointHead", "MaskHead"]
