"""The mask head learns the objects' shapes, not their boxes: on a handful of synthetic images
its mask AP must clear the same detections with their boxes filled in as masks (circles,
triangles and stick figures fill 20-80 % of their boxes), the floor a mask head that only
learned the box would sit on."""
import numpy as np
import torch

from detect.balancing import build_balancer
from detect.config import load_config
from detect.config_data import resolve_masks
from detect.data.build import EpochSampler, build_dataset, build_loader
from detect.data.segmentation import encode_mask
from detect.engine.inference import evaluate_model
from detect.engine.run_state import seed_everything
from detect.evaluation.segm import segm_metrics
from detect.models.build import build_for_data


def boxes_as_masks(gt: dict, preds: list[dict]) -> list[dict]:
    """The same detections, each mask replaced by its box filled in."""
    sizes = {i["id"]: (i["height"], i["width"]) for i in gt["images"]}
    out = []
    for p in preds:
        h, w = sizes[p["image_id"]]
        x, y, bw, bh = p["bbox"]
        m = np.zeros((h, w), bool)
        m[int(round(y)):int(round(y + bh)), int(round(x)):int(round(x + bw))] = True
        out.append({**p, "segmentation": encode_mask(m)})
    return out


def test_tiny_model_learns_masks_beyond_their_boxes(tiny_overrides) -> None:
    seed_everything(0, False)
    cfg = load_config("configs/demo.yaml", tiny_overrides + [
        "data.hflip=0.0", "data.scale_jitter=[1.0,1.0]", "data.color_jitter=0.0",
        "train.heads=[cls,box,masks]"])
    ds = build_dataset(cfg.data, cfg.data.train, train=False)
    ds.masks = True  # the training samples' masks (evaluation reads the file's)
    ds.ann.images = [r for r in ds.ann.images if len(r.labels)][:4]
    ds.paths = [ds._path(r) for r in ds.ann.images]
    ds.ann.gt["images"] = [i for i in ds.ann.gt["images"] if i["id"] in {r.id for r in ds.ann.images}]
    cfg = resolve_masks(cfg, ds.ann.mask_category_ids, "train")
    loader = build_loader(ds, 4, EpochSampler(len(ds), False), 0, 32)
    batch = next(iter(loader))
    model = build_for_data(cfg, ds.ann.categories, None)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    balancer = build_balancer(cfg.train.balancing, list(cfg.train.heads))
    for _ in range(150):
        model.train()
        losses = model.losses(model(batch.images), batch.targets)
        total = balancer({head: sum(t.values()) for head, t in losses.items()})
        opt.zero_grad()
        total.backward()
        opt.step()
    metrics, preds = evaluate_model(model, loader, ds.ann.gt, ds.ann.categories, cfg.postprocess,
                                    torch.device("cpu"))
    floor = segm_metrics(ds.ann.gt, boxes_as_masks(ds.ann.gt, preds), "faster")
    assert metrics["bbox"]["AP50"] > 0.7, metrics["bbox"]
    assert metrics["segm"]["AP"] - floor["AP"] > 0.15, (metrics["segm"], floor)
    assert metrics["segm"]["mIoU"] > floor["mIoU"] + 0.1, (metrics["segm"], floor)
