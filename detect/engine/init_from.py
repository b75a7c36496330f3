"""Start training from another model's weights (``tools/train.py --init-from SOURCE``).

SOURCE is one of our checkpoints, or ``torchvision:NAME[=FILE]``, a COCO-trained torchvision
detector (`detect.models.torchvision_weights`). Every tensor whose name (after the key table, for
torchvision) and shape match is loaded; the rest keep their fresh initialisation. Typical uses: add
a keypoint head to a detector trained for boxes only; fine-tune from COCO. The report says which
parts were loaded and which were initialised.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor, nn

import detect.models.torchvision_weights as tvw
from detect.engine.checkpoint import load_checkpoint


@dataclass
class InitReport:
    loaded: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)  # in the model, not (or not fitting) in the file
    unused: list[str] = field(default_factory=list)  # in the file, not in the model
    notes: list[str] = field(default_factory=list)  # lines added to the summary

    def parts(self, names: list[str]) -> dict[str, str]:
        """Per top-level part ("backbone", "neck", "heads.box", ...): loaded / initialised / partly."""
        out = {}
        for part in _parts(names):
            got = [k for k in self.loaded if _part(k) == part]
            new = [k for k in self.initialised if _part(k) == part]
            out[part] = "loaded" if got and not new else "initialised" if new and not got else "partly loaded"
        return out

    def summary(self, source: str | Path) -> str:
        lines = [f"init from {source}: {len(self.loaded)} tensors loaded, "
                 f"{len(self.initialised)} initialised, {len(self.unused)} unused"]
        for part, what in self.parts(self.loaded + self.initialised).items():
            lines.append(f"  {part:20s} {what}")
        if self.unused:
            lines.append(f"  unused from the file: {', '.join(sorted(set(map(_part, self.unused))))}")
        return "\n".join(lines + [f"  {n}" for n in self.notes])


def _part(key: str) -> str:
    bits = key.split(".")
    return ".".join(bits[:2]) if bits[0] == "heads" else bits[0]


def _parts(names: list[str]) -> list[str]:
    return list(dict.fromkeys(_part(k) for k in names))


def init_model(model: nn.Module, source: str | Path, class_names: Sequence[str] = (),
              class_map: str = "same-names") -> InitReport:
    """`init_from_torchvision` for ``torchvision:...`` sources, else `init_from_checkpoint`."""
    if str(source).startswith(tvw.PREFIX):
        return init_from_torchvision(model, str(source), class_names, class_map)
    return init_from_checkpoint(model, source)


def init_from_checkpoint(model: nn.Module, path: str | Path) -> InitReport:
    """Load the matching tensors of checkpoint ``path`` (its EMA weights when present)."""
    ckpt = load_checkpoint(path)
    src = ckpt["ema"]["module"] if ckpt.get("ema") else ckpt["model"]
    report = _load_matching(model, src)
    report.unused = [k for k in src if k not in model.state_dict()]
    return report


def init_from_torchvision(model: nn.Module, spec: str, class_names: Sequence[str] = (),
                          class_map: str = "same-names") -> InitReport:
    """Load what fits of a torchvision COCO model into ``model``. The classifier's last layer
    keeps COCO's rows for the classes `classifier_rows` maps (``class_names``: the dataset's
    classes, by label) and is initialised for the others; the report says which."""
    source, path, state = tvw.load(spec)
    own = model.state_dict()
    rows = tvw.classifier_rows(class_names, class_map) if class_names else {}
    report = _load_matching(model, tvw.convert(state, source.kind, own, rows))
    report.unused = tvw.unused_parts(state, source.kind)
    if source.kind != "keypointrcnn" and class_names:
        report.notes.append(_classifier_note(report, class_names, rows))
    return report


def _classifier_note(report: InitReport, class_names: Sequence[str], rows: dict[int, int]) -> str:
    """Which classes kept COCO's classifier rows; the predictor counts as loaded only if all did."""
    if not any(k.startswith(tvw.CLASSIFIER) for k in report.loaded):
        rows = {}  # nothing taken: no class mapped, or a classifier of another layout
    if len(rows) < len(class_names):
        moved = [k for k in report.loaded if k.startswith(tvw.CLASSIFIER)]
        report.loaded = [k for k in report.loaded if k not in moved]
        report.initialised += moved
    coco = tvw.coco_categories()
    kept = [f"{class_names[label]}<-{coco.names[coco.ids.index(i)]}" for label, i in rows.items()]
    new = [n for label, n in enumerate(class_names) if label not in rows]
    return (f"classifier: {len(kept)} of {len(class_names)} classes keep COCO's rows"
            + (f" ({', '.join(kept[:10])}{', ...' if len(kept) > 10 else ''})" if kept else "")
            + (f"; initialised: {', '.join(new[:10])}{', ...' if len(new) > 10 else ''}"
               if new else ""))


def _load_matching(model: nn.Module, src: Mapping[str, Tensor]) -> InitReport:
    """Load every tensor of ``src`` whose name and shape fit ``model``; report the rest."""
    own = model.state_dict()
    report = InitReport()
    take = {}
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in src:
            continue  # torchvision files have none (FrozenBatchNorm2d)
        if k in src and src[k].shape == v.shape:
            take[k] = src[k]
            report.loaded.append(k)
        else:
            report.initialised.append(k)
    model.load_state_dict(take, strict=False)
    return report
