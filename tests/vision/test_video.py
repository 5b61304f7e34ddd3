import numpy as np
import pytest
from PIL import Image

from glassbox.errors import UserError
from glassbox.vision.metrics import boundary_f, j_and_f, jaccard
from glassbox.vision.video import load_frames, moving_digits, occlusion_fraction, sample_point, save_frames


def test_generator_is_seeded_and_masks_are_visible_parts():
    a, b = moving_digits(3, frames=10), moving_digits(3, frames=10)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.frames, moving_digits(4, frames=10).frames)
    n = a.masks.shape[0]
    for i in range(n):
        for j in range(i + 1, n):
            assert not (a.masks[i] & a.masks[j]).any()  # visible parts never overlap
    assert a.frames.min() >= 0 and a.frames.max() <= 1


def test_some_videos_have_occlusions():
    fractions = [occlusion_fraction(moving_digits(s, frames=12)) for s in range(10)]
    assert max(fractions) > 0.05


def test_sample_point_lies_in_mask():
    v = moving_digits(0)
    x, y = sample_point(v.masks[0, 0], np.random.default_rng(0))
    assert v.masks[0, 0, int(y), int(x)]


def test_frames_round_trip(tmp_path):
    v = moving_digits(1, frames=4)
    save_frames(v, tmp_path)
    loaded = load_frames(tmp_path)
    assert loaded.frames.shape == v.frames.shape and loaded.names[0] == "00000.png"
    assert np.abs(loaded.frames - v.frames).max() <= 1 / 255 + 1e-6


def test_load_errors(tmp_path):
    with pytest.raises(UserError, match="has no frames"):
        load_frames(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (9, 8)).save(tmp_path / "b.png")
    with pytest.raises(UserError, match="frames differ in size: a.png is 8x8, b.png is 9x8"):
        load_frames(tmp_path)
    (tmp_path / "b.png").write_bytes(b"not an image")
    with pytest.raises(UserError, match="cannot read frame"):
        load_frames(tmp_path)
    with pytest.raises(UserError, match="is not a folder"):
        load_frames(tmp_path / "missing")


def test_j_and_f():
    gt = np.zeros((1, 3, 16, 16), bool)
    gt[0, :, 4:12, 4:12] = True
    assert j_and_f(gt, gt)["J&F"] == 1.0
    shifted = np.roll(gt, 1, axis=-1)
    assert jaccard(shifted[0], gt[0]) == pytest.approx(56 / 72)
    assert boundary_f(shifted[0], gt[0]) == 1.0  # within the 1-pixel tolerance
    assert j_and_f(np.zeros_like(gt), gt)["J&F"] == 0.0
    assert j_and_f(gt, gt, skip=0)["J"] == 1.0
