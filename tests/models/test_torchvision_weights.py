"""torchvision's COCO detectors in our models (detect/models/torchvision_weights.py), offline.

Parity is tested on random weights, nothing downloaded: a torchvision model is randomised
(BatchNorm statistics taken from random images; head convolutions scaled so that scores spread
over (0, 1) instead of saturating; the classifier rows of the 11 unused COCO ids and of the
background pushed to -30, because our model has no such classes), saved as a state dict,
converted, and both run on the same image.

Preprocessing that makes them comparable: a 128 x 128 image, torchvision's transform with
min_size = max_size = 128 (its resize has scale factor 1, the identity, and 128 is a multiple of
its size_divisible 32, so nothing is padded) and our letterbox at image_size 128 (the identity
too). Both run in float64: in float32 an untrained ResNet-50 amplifies rounding differences
(BatchNorm folded into the convolutions, inputs normalised from 0-255 rather than 0-1) to 2-6e-3 px
on boxes and 1e-5 on scores (measured), and near-equal scores swap places in the ranking.
"""
from __future__ import annotations

import argparse
import re

import numpy as np
import pytest
import torch
import torchvision.models._api
from torch import nn
from torchvision.models.detection import (keypointrcnn_resnet50_fpn, retinanet_resnet50_fpn,
                                          retinanet_resnet50_fpn_v2)

import detect.models.torchvision_weights as tvw
from detect import Detector
from detect.cli.train import main as train_main
from detect.config import load_config
from detect.tensor_files import CheckpointError
from detect.engine.init_from import init_model
from detect.models.build import build_model

SIZE = 128
V1, V2, KP = tvw.SOURCES.values()
UNUSED_IDS = [i for i in range(91) if i not in tvw.coco_categories().ids]  # 0 and the 11 gaps


def _bn_statistics(model: nn.Module, backbone: nn.Module) -> None:
    """Running BatchNorm statistics of two random images, so activations stay O(1)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average: the statistics of this batch exactly
    model.train()
    with torch.no_grad():
        backbone(torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)))
    model.eval()


def _randomise_head(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    head = model.head
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0, m.weight[0].numel() ** -0.5, generator=g)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1, generator=g)
        images, _ = model.transform([torch.rand(3, SIZE, SIZE, generator=g)])
        out = head(list(model.backbone(images.tensors).values()))
        cls = head.classification_head.cls_logits
        cls.weight.mul_(1 / out["cls_logits"].std())  # logits of spread about 1
        cls.bias.uniform_(-4, -1, generator=g)
        cls.bias.view(9, 91)[:, UNUSED_IDS] = -30
        head.regression_head.bbox_reg.weight.mul_(0.3 / out["bbox_regression"].std())


@pytest.fixture(scope="module")
def files(module_tmp) -> dict[str, tuple[nn.Module, object]]:
    """Source name -> (random torchvision model, its saved state dict), built on first use."""
    cache: dict = {}
    root = module_tmp

    def get(name: str):
        if name not in cache:
            torch.manual_seed(0)
            kw = dict(weights=None, weights_backbone=None, min_size=SIZE, max_size=SIZE)
            if name == KP.name:
                model = keypointrcnn_resnet50_fpn(**kw)
                _bn_statistics(model, model.backbone)
            else:
                build = retinanet_resnet50_fpn if name == V1.name else retinanet_resnet50_fpn_v2
                model = build(num_classes=91, **kw)
                _bn_statistics(model, model.backbone)
                _randomise_head(model)
            path = root / f"{name}.pth"
            torch.save(model.state_dict(), path)
            cache[name] = (model, path)
        return cache[name]
    return get


@pytest.mark.parametrize("name", [V1.name, V2.name])
def test_retinanet_detections_equal_torchvisions(files, name):
    tv, path = files(name)
    det = Detector.from_torchvision(f"{name}={path}", image_size=SIZE)
    det.model.double()
    tv = tv.double()
    image = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)  # BGR
    ours = det.predict(image)
    with torch.no_grad():
        rgb = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1)
        theirs = {k: v.numpy() for k, v in tv([rgb.double() / 255])[0].items()}
    assert len(ours.boxes) == len(theirs["boxes"]) > 50  # torchvision's cap is 300
    assert np.abs(ours.boxes - theirs["boxes"]).max() < 1e-3
    assert np.abs(ours.scores - theirs["scores"]).max() < 1e-5
    assert (ours.labels == theirs["labels"]).all()  # COCO category ids, torchvision's labels
    names = tvw.RetinaNet_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    assert ours.names == [names[i] for i in theirs["labels"]]


def test_keypointrcnn_backbone_and_fpn_features_equal_torchvisions(files):
    tv, path = files(KP.name)
    cfg = load_config("configs/atss_r50_fpn_coco_keypoints.yaml")
    model = build_model(cfg.model, 80, 17).eval()
    report = init_model(model, f"torchvision:{KP.name}={path}", ("person",) * 80)
    parts = report.parts(report.loaded + report.initialised)
    assert parts["backbone"] == "loaded" and parts["neck"] == "partly loaded"  # P6/P7 are new
    assert all(parts[h] == "initialised" for h in ("heads.cls", "heads.box", "heads.keypoints"))
    assert not report.notes  # no classifier to map
    assert {"rpn", "roi_heads", "backbone.fpn.inner_blocks.0"} <= set(report.unused)
    summary = report.summary(path)
    assert "loaded" in summary and "initialised" in summary and "roi_heads" in summary
    image = torch.randint(0, 256, (1, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(2))
    model.double()
    with torch.no_grad():
        ours = model.features(image)
        mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
        theirs = tv.double().backbone((image.double() / 255 - mean) / std)
    for level, key in enumerate(("1", "2", "3")):  # P3-P5; torchvision's "0" is P2
        assert ours[level].shape == theirs[key].shape
        torch.testing.assert_close(ours[level], theirs[key], rtol=1e-6, atol=1e-6 * float(
            theirs[key].abs().max()))


def test_fine_tuning_keeps_towers_and_maps_classes(files):
    tv, path = files(V1.name)
    cfg = load_config("configs/retinanet_r50_fpn_coco.yaml")
    names = ("Person", "widget", "dog", "pedestrian")
    model = build_model(cfg.model, len(names), 0)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    report = init_model(model, f"torchvision:{V1.name}={path}", names)
    parts = report.parts(report.loaded + report.initialised)
    assert parts["backbone"] == parts["neck"] == parts["heads.box"] == "loaded"
    assert parts["heads.cls"] == "partly loaded"  # tower loaded, last layer partly re-initialised
    assert report.notes == ["classifier: 2 of 4 classes keep COCO's rows (Person<-person, "
                            "dog<-dog); initialised: widget, pedestrian"]
    theirs = tv.state_dict()["head.classification_head.cls_logits.weight"].view(9, 91, 256, 3, 3)
    ours = model.state_dict()["heads.cls.predictor.weight"].view(9, 4, 256, 3, 3)
    kept = fresh["heads.cls.predictor.weight"].view(9, 4, 256, 3, 3)
    assert torch.equal(ours[:, 0], theirs[:, 1]) and torch.equal(ours[:, 2], theirs[:, 18])
    assert torch.equal(ours[:, 1], kept[:, 1]) and torch.equal(ours[:, 3], kept[:, 3])
    tower = "heads.cls.tower.convs.0.weight"
    assert torch.equal(model.state_dict()[tower], tv.state_dict()[
        "head.classification_head.conv.0.0.weight"])

    explicit = build_model(cfg.model, len(names), 0)
    report = init_model(explicit, f"torchvision:{V1.name}={path}", names, "pedestrian=person")
    assert report.notes[0].startswith("classifier: 1 of 4 classes keep COCO's rows (pedestrian")
    bias = explicit.state_dict()["heads.cls.predictor.bias"].view(9, 4)
    assert torch.equal(bias[:, 3], tv.state_dict()["head.classification_head.cls_logits.bias"]
                       .view(9, 91)[:, 1])
    report = init_model(build_model(cfg.model, len(names), 0), f"torchvision:{V1.name}={path}",
                        names, "none")
    assert report.notes[0].startswith("classifier: 0 of 4 classes")


def test_every_coco_class_keeps_its_row():
    coco = tvw.coco_categories()
    assert coco.num_classes == 80 and coco.ids[:3] == (1, 2, 3) and coco.ids[-1] == 90
    assert coco.names[0] == "person" and "N/A" not in coco.names
    assert tvw.classifier_rows(coco.names) == dict(enumerate(coco.ids))


@pytest.mark.parametrize("spec", ["pedestrian=persons", "nobody=person", "pedestrian"])
def test_bad_class_map_is_one_line(spec):
    with pytest.raises(CheckpointError, match=re.escape(f"class map '{spec}'")) as e:
        tvw.classifier_rows(("pedestrian", "car"), spec)
    assert "\n" not in str(e.value)


def test_legacy_key_spellings_load(files, tmp_path):
    """Files saved by torchvision before 0.13 (FPN blocks without '.0', towers as conv.0/2/4/6)."""
    _, path = files(V1.name)
    state = torch.load(path, weights_only=True)
    old = {}
    for k, v in state.items():
        k = re.sub(r"(fpn\.(?:inner|layer)_blocks\.\d)\.0\.", r"\1.", k)
        k = re.sub(r"(_head\.conv)\.(\d)\.0\.", lambda m: f"{m[1]}.{2 * int(m[2])}.", k)
        old[k] = v
    assert "backbone.fpn.inner_blocks.0.weight" in old and "head.regression_head.conv.6.bias" in old
    torch.save(old, tmp_path / "old.pth")
    _, _, loaded = tvw.load(f"{V1.name}={tmp_path / 'old.pth'}")
    assert loaded.keys() == {k for k in state if not k.endswith("num_batches_tracked")}


def test_name_resolves_through_torch_hub_cache(files, tmp_path, monkeypatch):
    _, path = files(V1.name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub/checkpoints/retinanet_resnet50_fpn_coco-eeacb38b.pth"
    cached.parent.mkdir(parents=True)
    cached.symlink_to(path)
    assert tvw.parse(f"torchvision:{V1.name}") == (V1, cached)

    calls = []

    def offline(url, *args, **kwargs):  # torchvision's weight API downloads through this
        calls.append((url, kwargs))
        raise OSError("no network in tests")
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(CheckpointError, match="download .* failed .* offline, pass a saved file as "
                       "torchvision:retinanet_resnet50_fpn_v2_coco=path/to/file.pth"):
        tvw.parse(f"torchvision:{V2.name}")
    assert calls == [(V2.url, {"progress": True, "weights_only": True})]


def test_configs_match_the_sources():
    for file, source in (("configs/retinanet_r50_fpn_coco.yaml", V1),
                         ("configs/retinanet_r50_fpn_v2_coco.yaml", V2)):
        assert load_config(file).model == load_config(None, list(source.model)).model


def _bad_files(files, tmp) -> list[tuple[str, str]]:
    """(spec, what the one-line error must say) for every kind of bad input."""
    v1, v2, kp = (files(s.name)[1] for s in (V1, V2, KP))
    (tmp / "text.pth").write_text("not a tensor file")
    torch.save({"x": argparse.Namespace(a=1)}, tmp / "pickle.pth")
    torch.save([torch.zeros(1)], tmp / "list.pth")
    state = torch.load(v1, weights_only=True)
    del state["head.regression_head.conv.1.0.weight"]
    torch.save(state, tmp / "truncated.pth")
    return [
        (f"{V1.name}={tmp / 'missing.pth'}", "torchvision state dict not found"),
        (f"{V1.name}={tmp / 'text.pth'}", "not a readable torchvision state dict"),
        (f"{V1.name}={tmp / 'pickle.pth'}", "refused: the file holds pickled objects"),
        (f"{V1.name}={tmp / 'list.pth'}", "not a torchvision state dict"),
        (f"{V2.name}={v1}", "'backbone.fpn.extra_blocks.p6.weight' is [256, 256, 3, 3], "
                            f"torchvision's {V2.name} has [256, 2048, 3, 3] (the file looks like "
                            f"{V1.name})"),
        (f"{V1.name}={v2}", "'backbone.fpn.extra_blocks.p6.weight' is [256, 2048, 3, 3], "
                            f"torchvision's {V1.name} has [256, 256, 3, 3] (the file looks like "
                            f"{V2.name})"),
        (f"{V1.name}={kp}", "'backbone.fpn.inner_blocks.0.0.weight' is [256, 256, 1, 1]"),
        (f"{V1.name}={tmp / 'truncated.pth'}", "no 'head.regression_head.conv.1.0.weight'"),
        ("retinanet_resnet101", "unknown torchvision model"),
    ]


def test_bad_input_is_one_line_naming_the_file(files, tmp_path):
    for spec, message in _bad_files(files, tmp_path):
        with pytest.raises(CheckpointError) as e:
            Detector.from_torchvision(spec)
        text = str(e.value)
        assert "\n" not in text and spec.split("=")[-1] in text and message in text, text
    with pytest.raises(CheckpointError, match="initialises a backbone"):
        Detector.from_torchvision(f"{KP.name}={files(KP.name)[1]}")


def test_bad_init_from_writes_nothing(files, tiny_overrides, tmp_path, capsys):
    _, v1 = files(V1.name)
    for spec in (f"torchvision:{V2.name}={v1}", f"torchvision:{V1.name}={tmp_path / 'no.pth'}"):
        out = tmp_path / "run"
        rc = train_main(["--config", "configs/demo.yaml", "--out", str(out), "--no-progress",
                         "--init-from", spec, *tiny_overrides])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and spec.split("=")[-1] in err
        assert not out.exists()


def test_train_cli_fine_tunes_from_coco_and_reports(files, tiny_synthetic, tmp_path, capsys):
    """tools/train.py --init-from torchvision:...: one step on the synthetic set (whose 'person'
    keeps COCO's rows), with the report printed."""
    _, v1 = files(V1.name)
    root = tiny_synthetic
    rc = train_main([
        "--config", "configs/retinanet_r50_fpn_coco.yaml", "--out", str(tmp_path / "run"),
        "--no-progress", "--init-from", f"torchvision:{V1.name}={v1}", "--device", "cpu",
        f"data.train.images={root / 'train'}", f"data.train.annotations=[{root / 'annotations/train.json'}]",
        f"data.val.images={root / 'val'}", f"data.val.annotations=[{root / 'annotations/val.json'}]",
        "data.image_size=128", "data.workers=0", "train.batch_size=1", "train.max_steps=1",
        "train.eval_every=0", "train.warmup_steps=1", "train.ema=false"])
    out = capsys.readouterr().out
    assert rc == 0 and (tmp_path / "run/last.pt").is_file()
    assert "classifier: 1 of 4 classes keep COCO's rows (person<-person); initialised: " in out
    assert re.search(r"backbone\s+loaded", out) and re.search(r"heads\.cls\s+partly loaded", out)
