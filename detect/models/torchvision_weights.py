"""torchvision's COCO-trained detectors as starting points: names, key table, conversion.

A source is named ``torchvision:NAME`` (``--init-from``) or ``NAME`` (`Detector.from_torchvision`),
optionally with a local file: ``NAME=path/to/file.pth`` (a state dict saved from torchvision, e.g.
the file its weight API downloads). Without a file the name resolves through torchvision's own
weight API: the file in torch hub's cache, downloaded there first when missing.

Every file is read with ``weights_only=True`` and checked against the torchvision architecture it
claims to be (every key and shape, in torchvision's order) before anything is converted, so a wrong
file is one line naming the file and the first key or shape that does not fit.

The conversion is a table of (our prefix, torchvision prefix) pairs (`key_table`): a tensor
``ours + rest`` is torchvision's ``theirs + rest``. The one tensor that is not copied as is is the
classifier's last layer: torchvision predicts 91 outputs per anchor (index = COCO category id, 0
and 11 ids unused), ours one per category of the dataset, so its rows are picked per class
(`classifier_rows`).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from torch import Tensor
from torchvision.models.detection import (KeypointRCNN_ResNet50_FPN_Weights,
                                          RetinaNet_ResNet50_FPN_V2_Weights,
                                          RetinaNet_ResNet50_FPN_Weights,
                                          keypointrcnn_resnet50_fpn, retinanet_resnet50_fpn,
                                          retinanet_resnet50_fpn_v2)

from detect.data.annotations import CategoryMap
from detect.tensor_files import CheckpointError, load_tensor_file

Kind = Literal["retinanet_v1", "retinanet_v2", "keypointrcnn"]
PREFIX = "torchvision:"

# Our model options that reproduce torchvision's RetinaNet (configs/retinanet_r50_fpn_coco.yaml
# and configs/retinanet_r50_fpn_v2_coco.yaml hold the same model settings).
RETINANET_V1_MODEL = (
    "model.backbone.name=resnet50", "model.backbone.frozen_stages=2",
    "model.neck.channels=256", "model.neck.extra_levels=2", "model.neck.extra_from=p5",
    "model.anchors.sizes=[32,64,128,256,512]", "model.anchors.ratios=[0.5,1.0,2.0]",
    "model.anchors.scales=[1.0,1.2599,1.5874]", "model.anchors.offset=0.0",
    "model.anchors.round_to_pixels=true", "model.heads.tower_depth=4", "model.heads.norm=none",
    "model.heads.box.loss=smooth_l1", "model.channels_last=false",
)
RETINANET_V2_MODEL = RETINANET_V1_MODEL + (
    "model.neck.extra_from=c5", "model.heads.norm=gn", "model.heads.box.loss=giou")
# torchvision's post-processing (score 0.05, top 1000 per level, NMS 0.5 are our defaults too)
TORCHVISION_POSTPROCESS = ("postprocess.max_detections=300", "train.heads=[cls,box]")


@dataclass(frozen=True)
class Source:
    """One supported torchvision model.

    Attributes:
        name: what users type.
        kind: the architecture, which picks the key table.
        weights: torchvision's weight entry (URL, categories, published metrics).
        loads: what of it our model takes, for the report and the README.
        model: our config options of the matching model (empty: any ResNet-50 FPN config).
    """

    name: str
    kind: Kind
    weights: object
    loads: str
    model: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return self.weights.url  # type: ignore[attr-defined]


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("retinanet_resnet50_fpn_coco", "retinanet_v1", RetinaNet_ResNet50_FPN_Weights.COCO_V1,
           "everything (ResNet-50, FPN P3-P7, both towers, classifier, box regressor)",
           RETINANET_V1_MODEL),
    Source("retinanet_resnet50_fpn_v2_coco", "retinanet_v2",
           RetinaNet_ResNet50_FPN_V2_Weights.COCO_V1,
           "everything (ResNet-50, FPN P3-P7 with P6 from C5, GroupNorm towers, classifier, "
           "box regressor)", RETINANET_V2_MODEL),
    Source("keypointrcnn_resnet50_fpn_coco", "keypointrcnn",
           KeypointRCNN_ResNet50_FPN_Weights.COCO_V1,
           "ResNet-50 and FPN P3-P5 (P6/P7 and heads initialised; RPN, RoI heads and P2 unused)"),
)}


# ------------------------------------------------------------------------------- key table
# (our prefix, torchvision prefix). RetinaNet's FPN takes C3-C5 (blocks 0-2); Keypoint R-CNN's
# takes C2-C5 (blocks 0-3), so our P3-P5 are its blocks 1-3 and its P2 block is not used.
BACKBONE = (("backbone.", "backbone.body."),)
RETINANET_FPN = (
    ("neck.lateral.0.", "backbone.fpn.inner_blocks.0.0."),  # C3 -> 256, 1x1
    ("neck.lateral.1.", "backbone.fpn.inner_blocks.1.0."),  # C4
    ("neck.lateral.2.", "backbone.fpn.inner_blocks.2.0."),  # C5
    ("neck.output.0.", "backbone.fpn.layer_blocks.0.0."),  # P3, 3x3
    ("neck.output.1.", "backbone.fpn.layer_blocks.1.0."),  # P4
    ("neck.output.2.", "backbone.fpn.layer_blocks.2.0."),  # P5
    ("neck.extra.0.", "backbone.fpn.extra_blocks.p6."),  # P6 from P5 (v1) or C5 (v2)
    ("neck.extra.1.", "backbone.fpn.extra_blocks.p7."),  # P7 from ReLU(P6)
)
KEYPOINTRCNN_FPN = (
    ("neck.lateral.0.", "backbone.fpn.inner_blocks.1.0."),
    ("neck.lateral.1.", "backbone.fpn.inner_blocks.2.0."),
    ("neck.lateral.2.", "backbone.fpn.inner_blocks.3.0."),
    ("neck.output.0.", "backbone.fpn.layer_blocks.1.0."),
    ("neck.output.1.", "backbone.fpn.layer_blocks.2.0."),
    ("neck.output.2.", "backbone.fpn.layer_blocks.3.0."),
)
RETINANET_TOWERS = tuple(
    (f"heads.{ours}.tower.convs.{j}.", f"head.{theirs}.conv.{j}.0.")  # 3x3 conv of block j
    for ours, theirs in (("cls", "classification_head"), ("box", "regression_head"))
    for j in range(4))
RETINANET_V2_TOWER_NORMS = tuple(
    (f"heads.{ours}.tower.norms.{j}.0.", f"head.{theirs}.conv.{j}.1.")  # GroupNorm of block j
    for ours, theirs in (("cls", "classification_head"), ("box", "regression_head"))
    for j in range(4))
RETINANET_PREDICTORS = (
    ("heads.cls.predictor.", "head.classification_head.cls_logits."),  # rows picked per class
    ("heads.box.predictor.", "head.regression_head.bbox_reg."),
)
CLASSIFIER = "heads.cls.predictor."
# Spellings of files saved before torchvision 0.13 (its own load hooks rename them the same way):
# FPN blocks without the ".0" of Conv2dNormActivation, RetinaNet v1 towers as conv.0, conv.2, ...
LEGACY_KEYS = (
    (re.compile(r"^(backbone\.fpn\.(?:inner|layer)_blocks\.\d+)\.(weight|bias)$"), r"\1.0.\2"),
    (re.compile(r"^(head\.\w+_head\.conv)\.([0246])\.(weight|bias)$"),
     lambda m: f"{m[1]}.{int(m[2]) // 2}.0.{m[3]}"),
)


def key_table(kind: Kind) -> tuple[tuple[str, str], ...]:
    match kind:
        case "retinanet_v1":
            return BACKBONE + RETINANET_FPN + RETINANET_TOWERS + RETINANET_PREDICTORS
        case "retinanet_v2":
            return (BACKBONE + RETINANET_FPN + RETINANET_TOWERS + RETINANET_V2_TOWER_NORMS
                    + RETINANET_PREDICTORS)
        case "keypointrcnn":
            return BACKBONE + KEYPOINTRCNN_FPN


def their_key(kind: Kind, ours: str) -> str | None:
    """torchvision's name of our tensor ``ours``, or None when the table does not cover it."""
    for mine, theirs in key_table(kind):
        if ours.startswith(mine):
            return theirs + ours[len(mine):]
    return None


# --------------------------------------------------------------------------- categories
def coco_categories() -> CategoryMap:
    """COCO's 80 categories with their original ids and names (from torchvision's weight meta,
    whose 91 names are indexed by category id, with '__background__' and 'N/A' for the gaps)."""
    names = RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    ids = tuple(i for i, n in enumerate(names) if n not in ("__background__", "N/A"))
    return CategoryMap(ids, tuple(names[i] for i in ids))


def classifier_rows(names: Sequence[str], class_map: str = "same-names") -> dict[int, int]:
    """Which classes keep COCO's classifier rows: {our label: COCO category id}.

    ``class_map``: "same-names" (a class named as a COCO category, ignoring case, keeps it),
    "none" (every class initialised), or explicit pairs "ours=coco,..." such as
    "pedestrian=person,car=car". A name that is in neither list is a `CheckpointError`.
    """
    coco = coco_categories()
    by_name = {n.lower(): i for n, i in zip(coco.names, coco.ids)}
    if class_map == "none":
        return {}
    if class_map == "same-names":
        return {label: by_name[n.lower()] for label, n in enumerate(names) if n.lower() in by_name}
    ours = {n: label for label, n in enumerate(names)}
    rows = {}
    for pair in class_map.split(","):
        mine, sep, theirs = pair.strip().partition("=")
        if not sep or mine not in ours or theirs.lower() not in by_name:
            raise CheckpointError(
                f"class map '{pair.strip()}': expected OURS=COCO with OURS one of the dataset's "
                f"classes and COCO one of COCO's 80 names (or 'same-names' / 'none')")
        rows[ours[mine]] = by_name[theirs.lower()]
    return rows


# ------------------------------------------------------------------------------ reading
def parse(spec: str | Path) -> tuple[Source, Path]:
    """``[torchvision:]NAME[=PATH]`` or a PATH alone (architecture read from its keys) ->
    (source, local file); a name without a file resolves through torchvision's weight API."""
    text = str(spec).removeprefix(PREFIX)
    name, sep, path = text.partition("=")
    if name in SOURCES:
        source = SOURCES[name]
        return source, Path(path) if sep else cached_file(source)
    if Path(text).suffix or Path(text).exists():
        return SOURCES[_guess(read_state_dict(Path(text)), Path(text))], Path(text)
    raise CheckpointError(f"{spec}: unknown torchvision model; supported: {', '.join(SOURCES)} "
                          "(NAME, NAME=PATH or a state-dict file)")


def cached_file(source: Source) -> Path:
    """torchvision's file for ``source`` in torch hub's cache, downloaded with torchvision's
    weight API when it is not there yet."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(source.url).path).name
    if not path.is_file():
        try:
            source.weights.get_state_dict(progress=True, weights_only=True)  # type: ignore[attr-defined]
        except Exception as e:  # offline, proxy, disk: all say the same to the user
            raise CheckpointError(
                f"{path}: not in the cache and the download from {source.url} failed "
                f"({type(e).__name__}); offline, pass a saved file as "
                f"{PREFIX}{source.name}=path/to/file.pth") from None
    return path


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from ``path`` (``weights_only=True``), legacy key spellings renamed and
    BatchNorm's ``num_batches_tracked`` counters dropped."""
    state = load_tensor_file(path, "torchvision state dict")
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: not a torchvision state dict (a mapping of tensor names "
                              "to tensors)")
    out = {}
    for k, v in state.items():
        if not k.endswith("num_batches_tracked"):
            for pattern, repl in LEGACY_KEYS:
                k = pattern.sub(repl, k)
            out[k] = v
    return out


def expected_shapes(kind: Kind) -> dict[str, tuple[int, ...]]:
    """Every tensor of torchvision's architecture (COCO classes) and its shape, in its order."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        match kind:
            case "retinanet_v1":
                model = retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
            case "retinanet_v2":
                model = retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None,
                                                  num_classes=91)
            case "keypointrcnn":
                model = keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def check(state: Mapping[str, Tensor], source: Source, path: Path) -> None:
    """One-line `CheckpointError` at the first key or shape that is not torchvision's."""
    expected = expected_shapes(source.kind)
    hint = _hint(state, source)
    for k, shape in expected.items():
        if k not in state:
            raise CheckpointError(f"{path}: not torchvision's {source.name}: no '{k}'{hint}")
        if tuple(state[k].shape) != shape:
            raise CheckpointError(f"{path}: '{k}' is {list(state[k].shape)}, torchvision's "
                                  f"{source.name} has {list(shape)}{hint}")
    extra = next((k for k in state if k not in expected), None)
    if extra is not None:
        raise CheckpointError(f"{path}: '{extra}' is not part of torchvision's {source.name}{hint}")


def _guess(state: Mapping[str, Tensor], path: Path) -> str:
    """The source name a state dict looks like, from its distinctive keys."""
    if any(k.startswith("roi_heads.keypoint") for k in state):
        return "keypointrcnn_resnet50_fpn_coco"
    p6 = state.get("backbone.fpn.extra_blocks.p6.weight")
    if p6 is not None and "head.classification_head.cls_logits.weight" in state:
        return "retinanet_resnet50_fpn_v2_coco" if p6.shape[1] == 2048 else "retinanet_resnet50_fpn_coco"
    raise CheckpointError(f"{path}: not a state dict of a supported torchvision model "
                          f"({', '.join(SOURCES)})")


def _hint(state: Mapping[str, Tensor], source: Source) -> str:
    try:
        looks = _guess(state, Path())
    except CheckpointError:
        return ""
    return f" (the file looks like {looks})" if looks != source.name else ""


def load(spec: str | Path) -> tuple[Source, Path, dict[str, Tensor]]:
    """Resolve, read and check a source: (source, file, its state dict)."""
    source, path = parse(spec)
    state = read_state_dict(path)
    check(state, source, path)
    return source, path, state


# --------------------------------------------------------------------------- conversion
def convert(state: Mapping[str, Tensor], kind: Kind, own: Mapping[str, Tensor],
            rows: Mapping[int, int]) -> dict[str, Tensor]:
    """Our tensors from torchvision's ``state``, for the keys of ``own`` (the model's state dict)
    that the table covers. The classifier's last layer takes the COCO rows of ``rows`` ({our
    label: COCO id}) and keeps ``own``'s for the other classes."""
    out = {}
    for k, mine in own.items():
        theirs = their_key(kind, k)
        if theirs is None or theirs not in state:
            continue
        if not k.startswith(CLASSIFIER):
            out[k] = state[theirs]
        elif (rows_of := _classifier(state[theirs], mine, rows)) is not None:
            out[k] = rows_of
    return out


def _classifier(theirs: Tensor, mine: Tensor, rows: Mapping[int, int]) -> Tensor | None:
    """[A * 91, ...] torchvision rows -> [A * C, ...] ours (output a * D + d, see heads/base.py);
    None when no row is taken or the layouts differ."""
    a = theirs.shape[0] // 91
    if not rows or theirs.shape[0] != 91 * a or mine.shape[0] % a or theirs.shape[1:] != mine.shape[1:]:
        return None
    out = mine.clone().view(a, -1, *mine.shape[1:])  # [A, C, ...]
    labels, ids = torch.tensor(list(rows)), torch.tensor(list(rows.values()))
    out[:, labels] = theirs.view(a, 91, *theirs.shape[1:])[:, ids]  # [A, 91, ...] -> rows
    return out.view_as(mine)


def unused_parts(state: Mapping[str, Tensor], kind: Kind) -> list[str]:
    """torchvision's modules the table does not take (e.g. rpn, roi_heads, the P2 FPN block)."""
    covered = tuple(theirs for _, theirs in key_table(kind))
    parts = {".".join(k.split(".")[:4 if k.startswith("backbone.fpn.") else 1])
             for k in state if not k.startswith(covered)}
    return sorted(parts)
