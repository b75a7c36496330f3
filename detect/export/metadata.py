"""What an exported model carries besides the graph: classes, keypoints, input format, settings.

Stored as string key -> JSON value pairs: ONNX ``metadata_props``, and ``metadata.json`` (one JSON
object) inside a TorchScript archive. Keys are the field names of `ExportMeta`.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields

from detect.data.transforms import PAD_VALUE

FORMAT = "detect-export/1"


@dataclass(frozen=True)
class ExportMeta:
    """Attributes:
        input_size: S; the graph takes [B, 3, S, S] letterboxed images.
        input_dtype: "uint8" or "float32" (0-255 values either way; RGB, NCHW).
        pad_value: grey level of the letterbox padding (bottom and right).
        class_names: name of each class, in contiguous-label order.
        category_ids: original category id of each class, same order; the graph's ``labels``
            output holds these ids.
        keypoint_names: K names ([] without a keypoint head).
        skeleton: 0-based keypoint index pairs to draw.
        fields: per instance head's output (after the four detection outputs), its
            ``geometry`` (`detect.structures.Geometry`: how it maps to original pixels) and
            ``category_ids``, the categories whose detections carry it ([]: all; the rows of the
            others are zeros), and ``stride``: for a mask, input pixels per value (its output
            holds [B, N, S / stride, S / stride] probabilities, zero outside each box, that
            `detect.masks.masks_to_original` resamples and thresholds).
        score_threshold, nms_iou, max_detections, topk_per_level, class_agnostic: the
            post-processing built into the graph.
        max_pixels: images larger than this are refused when read from files.
        outputs: the graph's output names, in order.
    """

    input_size: int
    input_dtype: str
    class_names: list[str]
    category_ids: list[int]
    keypoint_names: list[str]
    skeleton: list[list[int]]
    score_threshold: float
    nms_iou: float
    max_detections: int
    topk_per_level: int
    class_agnostic: bool
    max_pixels: int
    outputs: list[str]
    pad_value: int = PAD_VALUE
    format: str = FORMAT
    fields: dict[str, dict] = field(default_factory=dict)

    def to_props(self) -> dict[str, str]:
        """ONNX ``metadata_props``: every value JSON-encoded."""
        return {k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str) -> "ExportMeta":
        try:
            values = {k: json.loads(v) for k, v in props.items()}
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: export metadata is not JSON ({e})") from None
        return cls.from_dict(values, source)

    @classmethod
    def from_dict(cls, d: dict, source: str) -> "ExportMeta":
        """Raises ValueError naming ``source`` when the format is unknown or a key is missing."""
        if d.get("format") != FORMAT:
            raise ValueError(f"{source}: no detect export metadata (format {FORMAT} expected)")
        missing = [f.name for f in fields(cls) if f.name not in d
                   and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise ValueError(f"{source}: export metadata lacks {', '.join(missing)}")
        if "fields" not in d and "keypoints" in d["outputs"]:  # older exports: keypoints only
            d = {**d, "fields": {"keypoints": {"geometry": "points",
                                               "category_ids": d.get("keypoint_category_ids", [])}}}
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})
