"""All heads together can fit a handful of synthetic images (a learning smoke test), and the
keypoints learned are the images', not the mean pose's."""
import torch

from detect.balancing import build_balancer
from detect.config import load_config
from detect.data.build import EpochSampler, build_dataset, build_loader
from detect.engine.inference import evaluate_model
from detect.engine.run_state import seed_everything
from detect.evaluation.mean_pose import add_mean_pose, mean_pose
from detect.models.build import build_model



def test_tiny_model_fits_boxes_and_keypoints(tiny_overrides):
    seed_everything(0, False)
    cfg = load_config("configs/demo.yaml", tiny_overrides + [
        "data.hflip=0.0", "data.scale_jitter=[1.0,1.0]", "data.color_jitter=0.0"])
    ds = build_dataset(cfg.data, cfg.data.train, train=False)
    ds.ann.images = [r for r in ds.ann.images if len(r.labels)][:4]
    ds.paths = [ds._path(r) for r in ds.ann.images]
    ds.ann.gt["images"] = [i for i in ds.ann.gt["images"] if i["id"] in {r.id for r in ds.ann.images}]
    loader = build_loader(ds, 4, EpochSampler(len(ds), False), 0, 32)
    batch = next(iter(loader))
    model = build_model(cfg.model, ds.ann.categories.num_classes, 13)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    # the heads balanced as the demo config trains them (loss_norm)
    balancer = build_balancer(cfg.train.balancing, ["cls", "box", "keypoints"])
    for step in range(150):
        losses = model.losses(model(batch.images), batch.targets)
        total = balancer({head: sum(t.values()) for head, t in losses.items()})
        opt.zero_grad()
        total.backward()
        opt.step()
    params = cfg.postprocess
    metrics, preds = evaluate_model(model, loader, ds.ann.gt, ds.ann.categories, params,
                                torch.device("cpu"), cfg.model.heads.keypoints.sigmas)
    assert metrics["bbox"]["AP50"] > 0.7, metrics["bbox"]
    assert metrics["keypoints"]["AP50"] > 0.5, metrics["keypoints"]
    # the same detections with the training set's mean pose: the floor the head must clear
    floor = add_mean_pose(metrics, ds.ann.gt, preds, mean_pose(ds.ann.gt),
                          kpt_sigmas=cfg.model.heads.keypoints.sigmas)
    assert floor["keypoint_margin"]["AP"] > 0.5, (metrics["keypoints"], floor["keypoints_mean_pose"])
