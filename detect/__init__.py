"""detect: a multi-head object detector (backbone + FPN + task heads) with per-head evaluation."""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Detector", "Prediction", "load_config"]


def __getattr__(name: str):  # lazy: `import detect.config` stays light
    if name in ("Detector", "Prediction"):
        from detect import api
        return getattr(api, name)
    if name == "load_config":
        from detect.config import load_config
        return load_config
    raise AttributeError(name)
