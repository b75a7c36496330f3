"""Backbones: images [B, 3, H, W] -> [C2, C3, C4, C5] at strides 4, 8, 16, 32.

`base.py` (the `Backbone` interface), one file per network (`resnet.py`, `mobilenet_v3.py`,
`efficientnet_lite0.py`), `freezing.py` (frozen BatchNorm and stages) and `weights.py` (loading a
published weight file, every tensor accounted for). `detect.models.backbone` builds one by name.
"""
