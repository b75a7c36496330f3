"""Run an exported model with the `Detector.predict` API: ``ExportedDetector.from_onnx(path)``
(onnxruntime) or ``ExportedDetector.from_torchscript(path)``.

Pre- and post-processing are those of `Detector`: letterbox to the graph's input size, then
detections mapped back to original pixels (boxes clipped to the image). Everything else
(normalisation, network, decoding, NMS) is inside the graph.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from detect.config import ConfigError, PostprocessConfig
from detect.data.annotations import CategoryMap, KeypointMeta
from detect.data.image_io import ImageInput, load_image
from detect.data.transforms import Sample, letterbox_image
from detect.export.metadata import ExportMeta
from detect.prediction import Prediction, masked_field
from detect.structures import field_to_original
from detect.tensor_files import CheckpointError
from detect.video import predict_video

RunGraph = Callable[[np.ndarray], dict[str, np.ndarray]]
"""images [B, 3, S, S] -> the graph's outputs by name."""


class ExportedDetector:
    """An exported graph with `Detector`'s ``predict``; ``batch`` is the graph's fixed batch size
    (None: any), ``source`` the file it came from.

    ``params.score_thresh`` may be raised after loading (detections at or below it are dropped,
    which gives exactly what a graph exported with that threshold gives); every other setting is
    fixed in the graph.
    """

    def __init__(self, run: RunGraph, meta: ExportMeta, batch: int | None, source: str) -> None:
        self._run, self.meta, self.batch, self.source = run, meta, batch, source
        self.image_size, self.max_pixels = meta.input_size, meta.max_pixels
        self.categories = CategoryMap(tuple(meta.category_ids), tuple(meta.class_names))
        self.keypoints = (KeypointMeta(tuple(meta.keypoint_names),
                                       tuple(tuple(e) for e in meta.skeleton))
                          if meta.keypoint_names else None)
        self._exported = PostprocessConfig(meta.score_threshold, meta.topk_per_level, meta.nms_iou,
                                           meta.max_detections, meta.class_agnostic)
        self.params = self._exported
        self._names = dict(zip(meta.category_ids, meta.class_names))

    @classmethod
    def from_onnx(cls, path: str | Path, threads: int | None = None) -> "ExportedDetector":
        """onnxruntime on the CPU; ``threads`` intra-op threads (None: onnxruntime's default)."""
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        _require_file(path)
        try:
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types per failure
            raise CheckpointError(f"{path}: not a readable ONNX model "
                                  f"({str(e).splitlines()[0][:160]})") from None
        props = session.get_modelmeta().custom_metadata_map
        try:
            meta = ExportMeta.from_props(props, str(path))
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        batch = session.get_inputs()[0].shape[0]
        names = [o.name for o in session.get_outputs()]

        def run(images: np.ndarray) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(names, {"images": images})))

        return cls(run, meta, batch if isinstance(batch, int) else None, str(path))

    @classmethod
    def from_torchscript(cls, path: str | Path,
                         device: str | torch.device = "cpu") -> "ExportedDetector":
        from detect.export.archive import load_torchscript

        _require_file(path)
        try:
            module, meta = load_torchscript(path, device)
        except RuntimeError as e:
            raise CheckpointError(f"{path}: not a readable TorchScript archive "
                                  f"({str(e).splitlines()[0][:160]})") from None
        except ValueError as e:
            raise CheckpointError(str(e)) from None

        @torch.inference_mode()
        def run(images: np.ndarray) -> dict[str, np.ndarray]:
            outputs = module(torch.from_numpy(images).to(device))
            return {n: t.cpu().numpy() for n, t in zip(meta.outputs, outputs)}

        return cls(run, meta, None, str(path))

    def _load(self, image: ImageInput) -> np.ndarray:
        return load_image(image, self.max_pixels)

    def predict(self, images: ImageInput | Sequence[ImageInput],
                batch_size: int = 8) -> Prediction | list[Prediction]:
        """Paths or HxWx3 BGR uint8 arrays, one or a list; detections in original pixels."""
        self._check_params()
        single = isinstance(images, (str, Path, np.ndarray))
        items = [images] if single else list(images)
        step = self.batch or batch_size  # a graph exported without --dynamic-batch takes 1
        out: list[Prediction] = []
        for i in range(0, len(items), step):
            out += self._predict_batch([self._load(x) for x in items[i:i + step]])
        return out[0] if single else out

    predict_video = predict_video  # `detect.video.predict_video` over this predict()

    def _check_params(self) -> None:
        exported = self._exported
        if replace(self.params, score_thresh=exported.score_thresh) != exported:
            raise ConfigError(f"{self.source}: only score_thresh can change after export")
        if self.params.score_thresh < exported.score_thresh:
            raise ConfigError(f"{self.source}: score threshold {self.params.score_thresh} is below "
                             f"the exported {exported.score_thresh}; export again with "
                             f"--score-thresh {self.params.score_thresh}")

    def _predict_batch(self, images: list[np.ndarray]) -> list[Prediction]:
        samples = [letterbox_image(img, self.image_size) for img in images]
        batch = np.stack([s.image for s in samples]).transpose(0, 3, 1, 2)  # [B, 3, S, S]
        batch = np.ascontiguousarray(batch, dtype=np.dtype(self.meta.input_dtype))
        out = self._run(batch)
        return [self._to_prediction(out, b, s, img.shape[:2])
                for b, (s, img) in enumerate(zip(samples, images))]

    def _to_prediction(self, out: dict[str, np.ndarray], b: int, s: Sample,
                       size: tuple[int, int]) -> Prediction:
        """Image b's rows of the graph outputs, above the score threshold, in original pixels."""
        n = int(out["num_detections"][b])
        keep = out["scores"][b, :n] > self.params.score_thresh  # [N]
        offset = np.array(s.offset, np.float32)
        boxes = (out["boxes"][b, :n][keep].reshape(-1, 2, 2) - offset) / s.scale  # [N, 2, 2]
        h, w = size
        boxes = np.clip(boxes, 0, (w, h)).reshape(-1, 4).astype(np.float32)
        labels = out["labels"][b, :n][keep].astype(np.int64)
        fields = {}
        for name, spec in self.meta.fields.items():
            values = field_to_original(out[name][b, :n][keep].astype(np.float32),
                                       spec["geometry"], s.scale, s.offset, size,
                                       spec.get("stride", 1), boxes)
            ids = spec["category_ids"]
            present = np.array([not ids or int(c) in ids for c in labels], bool)
            fields[name] = masked_field(values, present, spec["geometry"])
        return Prediction(boxes=boxes, scores=out["scores"][b, :n][keep].astype(np.float32),
                          labels=labels, names=[self._names[int(i)] for i in labels],
                          fields=fields)


def _require_file(path: str | Path) -> None:
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: model file not found")

