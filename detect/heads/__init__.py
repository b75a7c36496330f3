"""Task heads: one file each, all following the `Head` protocol in `base.py`."""
from detect.heads.base import Head, Tower
from detect.heads.box import BoxHead
from detect.heads.classification import ClassificationHead
from detect.heads.keypoints import KeypointHead

__all__ = ["Head", "Tower", "BoxHead", "ClassificationHead", "KeypointHead"]
