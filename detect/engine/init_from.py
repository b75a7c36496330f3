"""Start training from another model's weights (``tools/train.py --init-from CKPT``).

Every tensor whose name and shape match is loaded; the rest keep their fresh initialisation.
Typical use: add a keypoint head to a detector trained for boxes only. The report says which
parts were loaded and which were initialised.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from detect.engine.checkpoint import load_checkpoint


@dataclass
class InitReport:
    loaded: list[str] = field(default_factory=list)
    initialised: list[str] = field(default_factory=list)  # in the model, not (or not fitting) in the file
    unused: list[str] = field(default_factory=list)  # in the file, not in the model

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
        return "\n".join(lines)


def _part(key: str) -> str:
    bits = key.split(".")
    return ".".join(bits[:2]) if bits[0] == "heads" else bits[0]


def _parts(names: list[str]) -> list[str]:
    return list(dict.fromkeys(_part(k) for k in names))


def init_from_checkpoint(model: nn.Module, path: str | Path) -> InitReport:
    """Load the matching tensors of checkpoint ``path`` (its EMA weights when present)."""
    ckpt = load_checkpoint(path)
    src = ckpt["ema"]["module"] if ckpt.get("ema") else ckpt["model"]
    own = model.state_dict()
    report = InitReport()
    take = {}
    for k, v in own.items():
        if k in src and src[k].shape == v.shape:
            take[k] = src[k]
            report.loaded.append(k)
        else:
            report.initialised.append(k)
    report.unused = [k for k in src if k not in own]
    model.load_state_dict(take, strict=False)
    return report
