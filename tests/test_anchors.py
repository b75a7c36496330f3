import math

import torch

from detect.anchors import AnchorGenerator


def test_tiny_case_hand_computed():
    gen = AnchorGenerator(strides=(8,), sizes=(32,), ratios=(0.5, 1.0, 2.0), scales=(1.0,))
    anchors = gen([(2, 2)], device="cpu")
    assert anchors.shape == (2 * 2 * 3, 4)
    assert anchors.dtype == torch.float32
    # ratio r = h / w keeps the area 32**2: r=0.5 -> w = 32*sqrt(2), h = 32/sqrt(2); r=2 -> swapped.
    s = 32 * math.sqrt(2) / 2  # half of the long side
    t = 32 / math.sqrt(2) / 2  # half of the short side
    expected = []
    for cy in (4.0, 12.0):  # rows first
        for cx in (4.0, 12.0):  # then columns
            expected += [
                [cx - s, cy - t, cx + s, cy + t],  # ratio 0.5: wide
                [cx - 16, cy - 16, cx + 16, cy + 16],  # ratio 1
                [cx - t, cy - s, cx + t, cy + s],  # ratio 2: tall
            ]
    torch.testing.assert_close(anchors, torch.tensor(expected))


def test_defaults_are_retinanet():
    gen = AnchorGenerator()
    assert gen.num_anchors_per_location == 9
    sizes = [(8, 10), (4, 5), (2, 3), (1, 2), (1, 1)]
    anchors = gen(sizes, device="cpu")
    assert gen.num_anchors_per_level(sizes) == [720, 180, 54, 18, 9]
    assert anchors.shape == (sum(gen.num_anchors_per_level(sizes)), 4)
    # every anchor of level l has area (size_l * scale)**2
    areas = (anchors[:, 2] - anchors[:, 0]) * (anchors[:, 3] - anchors[:, 1])
    first_level = areas[:720].reshape(8, 10, 3, 3)  # [H, W, ratios, scales]
    expected = torch.tensor([(32 * s) ** 2 for s in (1, 2 ** (1 / 3), 2 ** (2 / 3))])
    torch.testing.assert_close(first_level[3, 7, 1], expected)
    torch.testing.assert_close(first_level[0, 0, 2], expected)


def test_order_level_row_col_anchor():
    gen = AnchorGenerator(strides=(8, 16), sizes=(32, 64), ratios=(0.5, 1.0, 2.0), scales=(1.0, 2.0))
    sizes = [(3, 5), (2, 3)]
    anchors = gen(sizes, device="cpu")
    per_level = anchors.split(gen.num_anchors_per_level(sizes))
    for (h, w), stride, size, level in zip(sizes, (8, 16), (32, 64), per_level):
        grid = level.reshape(h, w, gen.num_anchors_per_location, 4)  # [H, W, A_per_loc, 4]
        for y in range(h):
            for x in range(w):
                centres = (grid[y, x, :, :2] + grid[y, x, :, 2:]) / 2  # [A_per_loc, 2]
                expected = torch.tensor([(x + 0.5) * stride, (y + 0.5) * stride]).expand_as(centres)
                torch.testing.assert_close(centres, expected)
        # anchor index a = ratio index * num_scales + scale index
        wh = grid[0, 0, :, 2:] - grid[0, 0, :, :2]  # [A_per_loc, 2]
        r, sc = 2.0, 2.0  # a = 2 * 2 + 1 = 5
        torch.testing.assert_close(wh[5], torch.tensor([size * sc / math.sqrt(r), size * sc * math.sqrt(r)]))


def test_atss_single_square_anchor_and_cache():
    strides = (8, 16, 32, 64, 128)
    gen = AnchorGenerator(strides, sizes=[8 * s for s in strides], ratios=(1.0,), scales=(1.0,))
    assert gen.num_anchors_per_location == 1
    sizes = [(4, 4), (2, 2), (1, 1), (1, 1), (1, 1)]
    anchors = gen(sizes, device="cpu")
    assert anchors.shape == (16 + 4 + 1 + 1 + 1, 4)
    wh = anchors[:, 2:] - anchors[:, :2]
    expected = torch.tensor([64.0] * 16 + [128.0] * 4 + [256.0, 512.0, 1024.0])
    torch.testing.assert_close(wh, torch.stack([expected, expected], dim=1))
    assert gen(sizes, device="cpu") is anchors  # cached
    assert gen(sizes, device="cpu", dtype=torch.float64).dtype == torch.float64


def test_torchvision_style_equals_torchvision_anchor_generator():
    """offset 0 + round_to_pixels reproduce torchvision's RetinaNet anchors exactly (a padded
    256 x 384 batch, so that torchvision's integer strides are 8 ... 128)."""
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.retinanet import _default_anchorgen

    sizes = [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    feats = [torch.zeros(1, 1, h, w) for h, w in sizes]
    theirs = _default_anchorgen()(ImageList(torch.zeros(1, 3, 256, 384), [(256, 384)]), feats)[0]
    for scales in ((1.0, 2 ** (1 / 3), 2 ** (2 / 3)), (1.0, 1.2599, 1.5874)):
        ours = AnchorGenerator(scales=scales, offset=0.0, round_to_pixels=True)(sizes)
        assert torch.equal(ours, theirs)
    centred = AnchorGenerator(scales=scales)(sizes)
    assert not torch.equal(centred, theirs)  # the default (cell centres) differs
