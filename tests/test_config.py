import pytest

from detect.config import ConfigError, config_from_dict, config_to_dict, load_config


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_defaults_and_overrides_parse_yaml_values():
    cfg = load_config(None, ["train.epochs=3", "data.train.annotations=[a.json,b.json]",
                             "model.heads.keypoints.num_keypoints=17", "train.lr=1e-3"])
    assert cfg.train.epochs == 3
    assert cfg.data.train.annotations == ("a.json", "b.json")
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.model.heads.keypoints.num_keypoints == 17


def test_base_file_is_overridden_by_experiment(tmp_path):
    write(tmp_path, "base.yaml", "train:\n  epochs: 5\n  lr: 0.1\nmodel:\n  num_classes: 3\n")
    exp = write(tmp_path, "exp.yaml", "_base_: base.yaml\ntrain:\n  epochs: 7\n")
    cfg = load_config(exp, ["model.num_classes=4"])
    assert (cfg.train.epochs, cfg.train.lr, cfg.model.num_classes) == (7, 0.1, 4)


def test_unknown_key_names_key_and_file(tmp_path):
    exp = write(tmp_path, "exp.yaml", "train:\n  epoch: 5\n")
    with pytest.raises(ConfigError, match=r"exp.yaml: unknown key 'train.epoch' \(did you mean 'train.epochs'"):
        load_config(exp)
    with pytest.raises(ConfigError, match="command line: unknown key 'model.backbone.nam'"):
        load_config(None, ["model.backbone.nam=resnet18"])


def test_wrong_type_names_key_and_file(tmp_path):
    base = write(tmp_path, "base.yaml", "train:\n  epochs: many\n")
    exp = write(tmp_path, "exp.yaml", "_base_: base.yaml\ntrain:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="base.yaml: 'train.epochs' must be an integer, got 'many'"):
        load_config(exp)
    with pytest.raises(ConfigError, match="'model.backbone.name' must be one of"):
        load_config(None, ["model.backbone.name=resnet19"])
    with pytest.raises(ConfigError, match="'train.ema' must be true or false"):
        load_config(None, ["train.ema=3"])
    del base


def test_keypoint_sigmas_length_checked_at_load():
    with pytest.raises(ConfigError, match="set model.heads.keypoints.sigmas"):
        load_config(None, ["model.heads.keypoints.num_keypoints=5"])
    with pytest.raises(ConfigError, match="has 2 values but model.heads.keypoints.num_keypoints is 5"):
        load_config(None, ["model.heads.keypoints.num_keypoints=5", "model.heads.keypoints.sigmas=[0.1,0.1]"])
    cfg = load_config(None, ["model.heads.keypoints.num_keypoints=2", "model.heads.keypoints.sigmas=[0.1,0.2]"])
    assert cfg.model.heads.keypoints.sigmas == (0.1, 0.2)


def test_round_trip_through_dict():
    cfg = load_config(None, ["train.loss_weights={cls: 1.0, keypoints: 0.5}", "data.flip_pairs=[[1,2]]"])
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg
    assert again.data.flip_pairs == ((1, 2),)


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = write(tmp_path, "bad.yaml", "train: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)


def _resolved(names: tuple[str, ...], *overrides: str):
    from detect.config_data import resolve_keypoints, resolve_masks
    cfg = resolve_keypoints(load_config("configs/demo.yaml", list(overrides)), names, "train.json")
    return resolve_masks(cfg, None, "train.json")  # a dataset without segmentations


def test_keypoint_settings_follow_the_data() -> None:
    from detect.data.synthetic.categories import KEYPOINT_NAMES
    from detect.losses import COCO_PERSON_KEYPOINTS, COCO_PERSON_SIGMAS
    demo = _resolved(KEYPOINT_NAMES)  # 13 keypoints, the demo config's sigmas
    assert demo.model.heads.keypoints.num_keypoints == 13 and len(demo.model.heads.keypoints.sigmas) == 13
    assert "keypoints" in demo.train.heads
    boxes = _resolved(())  # the same config on a box-only dataset: box-only, no override
    assert boxes.model.heads.keypoints.num_keypoints == 0 and boxes.train.heads == ("cls", "box")
    only = _resolved(KEYPOINT_NAMES, "train.heads=[cls,box]")  # box-only whatever the data has
    assert only.model.heads.keypoints.num_keypoints == 0 and only.train.heads == ("cls", "box")
    coco = _resolved(tuple(reversed(COCO_PERSON_KEYPOINTS)), "model.heads.keypoints.sigmas=null")
    assert coco.model.heads.keypoints.sigmas == tuple(reversed(COCO_PERSON_SIGMAS))  # by name
    again = config_from_dict(config_to_dict(demo))  # what a checkpoint stores reloads as it is
    assert again == demo


def test_keypoint_settings_that_do_not_fit_the_data_say_how_to_fix_them() -> None:
    with pytest.raises(ConfigError, match=r"train.json: the training annotations have 3 keypoints "
                                          r"\(a, b, c\) with no known OKS sigmas: set "
                                          r"model.heads.keypoints.sigmas to 3 values"):
        _resolved(("a", "b", "c"), "model.heads.keypoints.sigmas=null")
    with pytest.raises(ConfigError, match="keypoints.sigmas has 13 values but the training "
                                          "annotations have 3 keypoints"):
        _resolved(("a", "b", "c"))
    with pytest.raises(ConfigError, match="num_keypoints is 13 but the training annotations "
                                          "have 0 keypoints"):
        _resolved((), "model.heads.keypoints.num_keypoints=13")


def test_old_flat_head_keys_name_their_new_place() -> None:
    with pytest.raises(ConfigError, match=r"^command line: 'model.heads.keypoint_sigmas' is now "
                                          r"'model.heads.keypoints.sigmas'$"):
        load_config(None, ["model.heads.keypoint_sigmas=[0.1]"])
    with pytest.raises(ConfigError, match=r"'model.heads.box_loss' is now 'model.heads.box.loss'"):
        load_config(None, ["model.heads.box_loss=giou"])
    with pytest.raises(ConfigError, match=r"keypoint_side_tower' is now 'model.heads.keypoints."
                                          r"handedness' \(none, anchor or crop\)"):
        load_config(None, ["model.heads.keypoint_side_tower=crop"])
    with pytest.raises(ConfigError, match=r"'model.heads.share_tower' was removed"):
        load_config(None, ["model.heads.share_tower=false"])


def test_a_stored_config_of_the_flat_layout_is_translated() -> None:
    new = config_to_dict(load_config(None, []))
    old = {**new, "model": {**new["model"], "heads": {
        "tower_depth": 2, "norm": "bn", "prior_prob": 0.02, "box_loss": "smooth_l1",
        "box_weights": [1, 1, 2, 2], "num_keypoints": 3, "keypoint_sigmas": [0.1, 0.2, 0.3],
        "keypoint_handedness": True, "keypoint_side_tower": "keypoints", "keypoint_field": True,
        "keypoint_side_weight": 3.0, "share_tower": False, "depthwise": False,
        "keypoint_heatmaps": False, "keypoint_side_grad": 1.0}}}
    h = config_from_dict(old, "old.pt").model.heads
    assert (h.tower_depth, h.norm, h.cls.prior_prob, h.box.loss, h.box.weights) == (
        2, "bn", 0.02, "smooth_l1", (1.0, 1.0, 2.0, 2.0))
    kp = h.keypoints
    assert (kp.num_keypoints, kp.sigmas, kp.handedness, kp.field, kp.side_weight) == (
        3, (0.1, 0.2, 0.3), "anchor", True, 3.0)
    off = {**old, "model": {**old["model"], "heads": {"keypoint_handedness": False,
                                                      "keypoint_side_tower": "crop"}}}
    assert config_from_dict(off, "old.pt").model.heads.keypoints.handedness == "none"
    for removed in ({"keypoint_heatmaps": True}, {"keypoint_side_tower": "own",
                                                  "keypoint_handedness": True},
                    {"box_loss": "giou+l1"}, {"share_tower": True}):
        bad = {**old, "model": {**old["model"], "heads": removed}}
        with pytest.raises(ConfigError, match=r"^old.pt: trained with model.heads.* an option "
                                              r"that was removed"):
            config_from_dict(bad, "old.pt")
