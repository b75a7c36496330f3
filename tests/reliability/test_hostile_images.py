"""Hostile image files: refused with their name and reason, or skipped, counted and reported.

Grey/RGBA/palette/16-bit conversion, EXIF orientation, empty and non-image files, escaping file
names and the EXIF size mismatch have unit tests in tests/data/test_dataset.py.
"""
import re
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from detect.data.collate import Collate
from detect.data.dataset import BadImage, CocoDetection
from detect.data.image_io import ImageError, probe_image, read_image
from detect.data.transforms import TrainTransform, ValTransform
from detect.engine.trainer import TrainingError
from reliability_helpers import default_objects, make_trainer, write_dataset


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def png_header(width, height):
    """A PNG whose header claims width x height (its pixel data is a few bytes of nothing)."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 9))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("progressive", [False, True])
def test_truncated_jpeg_is_an_error_not_a_grey_image(tmp_path, progressive):
    path = tmp_path / "t.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)).save(
        path, progressive=progressive)
    assert read_image(path).shape == (48, 64, 3)
    path.write_bytes(path.read_bytes() + b"trailing data after the end marker\xff\xda\x00")
    assert read_image(path).shape == (48, 64, 3)  # data after EOI (e.g. motion photos) is fine
    truncate(path, 0.6)
    assert probe_image(path) == (64, 48)  # the header is intact
    with pytest.raises(ImageError, match=r"t\.jpg: truncated JPEG"):
        read_image(path)


def test_enormous_image_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded")
    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    big, bomb = tmp_path / "big.png", tmp_path / "bomb.png"
    big.write_bytes(png_header(12_000, 10_000))  # 120 MP: over data.max_pixels' default
    bomb.write_bytes(png_header(30_000, 30_000))  # 900 MP: over Pillow's bomb limit too
    with pytest.raises(ImageError, match=r"big\.png: 12000x10000 pixels exceeds the limit of "
                                         r"100000000 \(data\.max_pixels\)"):
        read_image(big)
    with pytest.raises(ImageError, match=r"bomb\.png: more than \d+ pixels"):
        read_image(bomb)
    assert probe_image(big, max_pixels=200_000_000) == (12_000, 10_000)  # header only


@pytest.mark.parametrize("suffix", ["jpg", "png", "webp", "tiff"])
def test_exif_rotation_gives_the_same_size_in_the_header_check_and_when_decoded(tmp_path, suffix):
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    path = tmp_path / f"r.{suffix}"
    Image.new("RGB", (6, 4)).save(path, exif=exif)
    assert probe_image(path) == (4, 6)
    assert read_image(path).shape == (6, 4, 3)


def test_check_images_applies_data_max_pixels(tmp_path):
    data = write_dataset(tmp_path, [default_objects(0), default_objects(1)])
    ds = CocoDetection.from_files(data["images"], [str(data["annotations"])], ValTransform(64),
                                  max_pixels=64 * 64 - 1)
    problems = ds.check_images(drop_unreadable=True)
    assert len(problems) == 2 and "000.jpg: 64x64 pixels exceeds the limit" in problems[0]
    assert len(ds) == 0


def test_one_pixel_image_goes_through_both_pipelines(tmp_path):
    data = write_dataset(tmp_path, [[{"category_id": 2, "bbox": [0, 0, 1, 1], "iscrowd": 0}]],
                         size=1)
    for transform in (ValTransform(64), TrainTransform(64)):
        ds = CocoDetection.from_files(data["images"], [str(data["annotations"])], transform)
        assert ds.check_images(drop_unreadable=False) == []
        batch = Collate(32)([ds[0]])
        assert batch.images.shape == (1, 3, 64, 64) and not batch.skipped
        assert batch.targets[0].boxes.shape[1] == 4


def test_image_corrupted_after_the_header_check_is_skipped_counted_and_reported(
        tiny_model, tmp_path, capsys):
    data = write_dataset(tmp_path / "d", [default_objects(i) for i in range(4)])
    t = make_trainer(tiny_model, data, tmp_path / "run", "train.max_steps=2")
    truncate(data["images"] / "001.jpg")  # after the header check of the Trainer
    (data["images"] / "002.jpg").write_bytes(b"")
    t.train()  # one epoch: every image read once
    assert t.state.step == 2
    assert sorted(s.split(": ")[1] for s in t.skipped) == ["empty file (0 bytes)",
                                                           "truncated JPEG (no end-of-image "
                                                           "marker after the last scan)"]
    out = capsys.readouterr().out
    assert re.search(r"skipped 2 unreadable image\(s\) \(\d+ time\(s\) in all\):", out)
    assert "001.jpg: truncated JPEG" in out and "002.jpg: empty file" in out


def test_on_bad_image_error_stops_naming_the_image(tiny_model, tmp_path):
    data = write_dataset(tmp_path / "d", [default_objects(i) for i in range(2)])
    t = make_trainer(tiny_model, data, tmp_path / "run", "data.on_bad_image=error")
    truncate(data["images"] / "001.jpg")
    with pytest.raises(TrainingError, match=r"unreadable image at step 1: .*001\.jpg: truncated"):
        t.train()


def test_unreadable_image_is_listed_once_with_its_reason(tmp_path):
    data = write_dataset(tmp_path, [default_objects(0)])
    ds = CocoDetection.from_files(data["images"], [str(data["annotations"])], ValTransform(64))
    truncate(data["images"] / "000.jpg")
    bad = ds[0]
    assert isinstance(bad, BadImage) and bad.reason.startswith("truncated JPEG")
    assert Collate(32)([bad]).skipped == [f"{data['images'] / '000.jpg'}: {bad.reason}"]
