"""The synthetic dataset's categories (non-contiguous ids) and the person's keypoints."""
from __future__ import annotations

PERSON_ID = 1
KEYPOINT_NAMES: tuple[str, ...] = (
    "head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
    "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
# 1-based keypoint index pairs, as in COCO's ``skeleton`` field.
SKELETON: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 3), (2, 3), (2, 4), (4, 6), (3, 5), (5, 7),
    (2, 8), (3, 9), (8, 9), (8, 10), (10, 12), (9, 11), (11, 13),
)  # fmt: skip
CATEGORIES: tuple[dict, ...] = (
    {"id": PERSON_ID, "name": "person", "supercategory": "person",
     "keypoints": list(KEYPOINT_NAMES), "skeleton": [list(p) for p in SKELETON]},
    {"id": 3, "name": "circle", "supercategory": "shape"},
    {"id": 7, "name": "box", "supercategory": "shape"},
    {"id": 10, "name": "triangle", "supercategory": "shape"},
)  # fmt: skip
CATEGORY_IDS = {c["name"]: c["id"] for c in CATEGORIES}
