"""The Python API: ``Detector.from_checkpoint(path).predict(images)``."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from detect.config import Config, load_config
from detect.config_data import keypoint_sigmas, model_keypoints, model_masks, resolve_keypoints
from detect.data.annotations import CategoryMap, KeypointMeta
from detect.data.image_io import ImageInput, load_image
from detect.data.transforms import Sample, letterbox_image, stack_padded
from detect.engine.checkpoint import load_checkpoint, load_weights, stored_config
from detect.models.build import HeadFactory, build_for_data, build_model, mask_classes
from detect.models.detector import HeadOutputs, MultiHeadDetector
from detect.models.frozen import FrozenForward
from detect.prediction import Prediction
from detect.structures import Detections
from detect.tensor_files import CheckpointError
from detect.video import predict_video

if TYPE_CHECKING:
    from detect.export.runtime import ExportedDetector


class Detector:
    """A trained (or randomly initialised) model with its pre- and post-processing."""

    def __init__(self, model: MultiHeadDetector, cfg: Config, categories: CategoryMap,
                 keypoints: KeypointMeta | None = None, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg, self.categories, self.keypoints = cfg, categories, keypoints
        self.params = cfg.postprocess
        self.image_size = cfg.data.image_size
        # the network sees the smallest canvas of multiples of data.size_divisor that holds the
        # batch (a 4:3 photo: 20 % fewer pixels than the square, docs/BENCHMARKS.md); True: the
        # square, as an exported graph (fixed S x S input) and evaluation see it
        self.square_input = False
        self._network: Callable[[torch.Tensor], HeadOutputs] = self.model

    def optimize(self) -> "Detector":
        """Run the network as a frozen TorchScript graph on the CPU, the kind measured fastest for
        its backbone (`FrozenForward`: 1.2x faster than eager for the light model at 320, 1.1x for
        R50 at 640). The first batch of each shape pays the tracing and a few warm-up runs (about
        a second for the light model): worth it for folders and video, not for one image. Call
        after the weights are final; a no-op on other devices. Returns self."""
        if self.device.type == "cpu":
            self._network = FrozenForward(self.model)
        return self

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        use_ema: bool = True, heads: Sequence[HeadFactory] = ()) -> "Detector":
        """The model a training run saved; ``heads``: the builders of heads of the caller's that
        it was trained with (`detect.models.build`)."""
        ckpt = load_checkpoint(path, map_location="cpu")
        cfg = stored_config(ckpt, path)
        categories = CategoryMap.from_dict(ckpt["categories"])
        kmeta = _keypoint_meta(ckpt.get("keypoints"))
        try:
            model = build_for_data(_no_pretrained(cfg), categories, kmeta, heads)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
        k = model_keypoints(cfg)
        ema = ckpt.get("ema")
        weights = ema.get("module") if use_ema and isinstance(ema, dict) else ckpt["model"]
        try:
            load_weights(model, weights, path)
        except CheckpointError as e:
            raise CheckpointError(f"{e} (built from the checkpoint's config, "
                                  f"{categories.num_classes} classes and {k} keypoints)") from None
        return cls(model, cfg, categories, kmeta, device)

    @classmethod
    def from_config(cls, path: str | Path, overrides: Sequence[str] = (),
                    categories: Sequence[str] | None = None,
                    device: str | torch.device = "cpu",
                    heads: Sequence[HeadFactory] = ()) -> "Detector":
        """Random initialisation; class names default to ``class0..`` (model.num_classes).
        With no data to read them from, K is ``model.heads.keypoints.num_keypoints``, else the
        number of its ``sigmas``, else COCO's 17; keypoints are named ``kp0..`` and their left/right
        pairs (handedness, flipping) are ``data.flip_pairs`` (none when unset). A mask head only
        with ``model.heads.masks.enabled=true`` (and ``masks`` in ``train.heads``), serving
        ``category_ids`` (1..C here) or every class."""
        cfg = load_config(path, list(overrides))
        kp = cfg.model.heads.keypoints
        k = kp.num_keypoints
        if k is None:
            k = len(kp.sigmas) if kp.sigmas is not None else 17
        cfg = resolve_keypoints(cfg, tuple(f"kp{i}" for i in range(k)), str(path))
        n = len(categories) if categories else cfg.model.num_classes
        if n <= 0:
            raise ValueError("from_config needs model.num_classes > 0 or a categories list")
        names = tuple(categories) if categories else tuple(f"class{i}" for i in range(n))
        cmap = CategoryMap(tuple(range(1, n + 1)), names)
        k = model_keypoints(cfg)
        pairs = (cfg.data.flip_pairs or ()) if k else ()
        flat = [i for pair in pairs for i in pair]
        if any(not (0 <= i < k) for i in flat) or len(set(flat)) != len(flat):
            raise ValueError(f"data.flip_pairs {list(pairs)}: each keypoint at most once, in range "
                             f"for {k} keypoints")
        kmeta = KeypointMeta(tuple(f"kp{i}" for i in range(k)), flip_pairs=pairs) if k else None
        masks = mask_classes(cfg, cmap) if model_masks(cfg) else None
        return cls(build_model(cfg.model, n, k, flip_pairs=pairs, extra_heads=heads,
                               mask_classes=masks), cfg, cmap, kmeta, device)

    @classmethod
    def from_torchvision(cls, source: str | Path, image_size: int | None = None,
                         device: str | torch.device = "cpu") -> "Detector":
        """A torchvision COCO detector converted exactly (`detect.models.torchvision_weights`):
        ``"retinanet_resnet50_fpn_coco"``, ``"retinanet_resnet50_fpn_v2_coco"``, either as
        ``NAME=path/to/file.pth``, or a state-dict file alone. It predicts COCO's 80 categories
        with their original ids and names. ``image_size``: the letterbox side (default 640)."""
        from detect.models import torchvision_weights as tvw
        src, path, state = tvw.load(source)
        if not src.model:
            raise CheckpointError(f"{path}: {src.name} has no detection head of ours to predict "
                                  "with; it initialises a backbone for training (--init-from)")
        size = [f"data.image_size={image_size}"] if image_size else []
        cfg = load_config(None, [*src.model, *tvw.TORCHVISION_POSTPROCESS, *size])
        categories = tvw.coco_categories()
        model = build_model(cfg.model, categories.num_classes, 0)
        own = model.state_dict()
        rows = dict(enumerate(categories.ids))  # every class keeps its COCO row
        load_weights(model, tvw.convert(state, src.kind, own, rows), path)
        return cls(model, cfg, categories, None, device)

    # exported graphs with the same predict() API (detect/export, docs/EXPORT.md)
    @classmethod
    def from_onnx(cls, path: str | Path, threads: int | None = None) -> "ExportedDetector":
        """An ONNX file written by tools/export.py, run with onnxruntime on the CPU."""
        from detect.export.runtime import ExportedDetector
        return ExportedDetector.from_onnx(path, threads)

    @property
    def max_pixels(self) -> int:
        """Images larger than this are refused when read from files."""
        return self.cfg.data.max_pixels

    def _load(self, image: ImageInput) -> np.ndarray:
        return load_image(image, self.max_pixels)

    @torch.inference_mode()
    def predict(self, images: ImageInput | Sequence[ImageInput],
                batch_size: int = 8) -> Prediction | list[Prediction]:
        """Paths or HxWx3 BGR uint8 arrays, one or a list; detections in original pixels."""
        single = isinstance(images, (str, Path, np.ndarray))
        items = [images] if single else list(images)
        out: list[Prediction] = []
        for i in range(0, len(items), batch_size):
            out += self._predict_batch([self._load(x) for x in items[i:i + batch_size]])
        return out[0] if single else out

    predict_video = predict_video  # `detect.video.predict_video` over this predict()

    def _predict_batch(self, images: list[np.ndarray]) -> list[Prediction]:
        divisor = None if self.square_input else self.cfg.data.size_divisor
        samples = [letterbox_image(img, self.image_size, divisor) for img in images]
        batch = torch.from_numpy(stack_padded([s.image for s in samples])).permute(0, 3, 1, 2)
        out = self._network(batch.to(self.device))
        dets = self.model.detect(out, [s.image.shape[:2] for s in samples], self.params)
        return [self._to_prediction(d, s, img.shape[:2]) for d, s, img in zip(dets, samples, images)]

    def _to_prediction(self, det: Detections, s: Sample, size: tuple[int, int]) -> Prediction:
        return self.model.prediction(self.model.to_original(det, s.scale, s.offset, size),
                                     self.categories)

    @property
    def sigmas(self) -> tuple[float, ...]:
        return keypoint_sigmas(self.cfg.model.heads.keypoints)


def _keypoint_meta(d: dict | None) -> KeypointMeta | None:
    if not d:
        return None
    return KeypointMeta(tuple(d["names"]), tuple(tuple(p) for p in d["skeleton"]),
                        tuple(tuple(p) for p in d["flip_pairs"]),
                        tuple(int(i) for i in d.get("category_ids", ())))  # () before they were kept


def _no_pretrained(cfg: Config) -> Config:
    """The same config without backbone weight files (the checkpoint has the weights)."""
    from dataclasses import replace
    return replace(cfg, model=replace(cfg.model, backbone=replace(cfg.model.backbone, weights=None)))
