"""SAM 2's non-overlap constraints: ``track.non_overlapping`` and ``track.NonOverlappingMemory``."""

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from glassbox.errors import UserError
from glassbox.vision import track as tr
from glassbox.vision.train import TrackConfig, evaluate
from glassbox.vision.video import moving_digits


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return tr.build_model(tr.small_config(), seed=0)


def _naive(logits: torch.Tensor) -> torch.Tensor:
    """Pixel by pixel: the object with the highest logit keeps it, every other one is capped at -10."""
    out = logits.clone()
    flat, res = logits.reshape(logits.shape[0], -1), out.reshape(logits.shape[0], -1)
    for p in range(flat.shape[1]):
        best = int(flat[:, p].argmax())
        for i in range(flat.shape[0]):
            if i != best:
                res[i, p] = min(float(flat[i, p]), -10.0)
    return out


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 4, 6, 6), (4, 1, 9)])
def test_non_overlapping_matches_the_pixel_loop(shape):
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 20
    got = tr.non_overlapping(logits)
    torch.testing.assert_close(got, _naive(logits), rtol=0, atol=0)
    assert ((got > 0).sum(dim=0) <= 1).all()  # each pixel positive for one object at most


def test_non_overlapping_leaves_one_object_alone():
    logits = torch.randn(1, 8, 8)
    assert torch.equal(tr.non_overlapping(logits), logits)


def _video_and_points(seed=3, objects=3, frames=4):
    video = moving_digits(seed=seed, frames=frames, size=64, objects=objects)
    points = [(float(np.nonzero(m)[1][0]), float(np.nonzero(m)[0][0])) for m in video.masks[:, 0]]
    return video, points


def _overlapping(model):
    """A forward hook that makes every object present and positive on the frame's top half, plus noise:
    the untrained model's own masks are empty, so nothing would overlap to be constrained."""

    def hook(_m, _i, out):
        masks, iou, tokens, score = out  # (B, O, K, h, w), ..., (B, O, 1)
        gen = torch.Generator().manual_seed(masks.shape[0])
        bump = torch.zeros_like(masks)
        bump[..., : masks.shape[-2] // 2, :] = 5.0
        return masks + bump + torch.randn(masks.shape, generator=gen), iou, tokens, score.abs() + 10.0

    return model.mask_decoder.register_forward_hook(hook)


def _memory_masks(model, run):
    """The high-resolution masks that reach ``_encode_new_memory`` during ``run()``, per call."""
    seen = []
    original = type(model)._encode_new_memory

    def spy(self, *args, **kwargs):
        seen.append(kwargs["pred_masks_high_res"].clone())
        return original(self, *args, **kwargs)

    handle = _overlapping(model)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(type(model), "_encode_new_memory", spy)
            result = run()
    finally:
        handle.remove()
    return seen, result


def test_memory_gets_disjoint_masks_and_the_model_is_restored(model):
    video, points = _video_and_points()
    seen, _ = _memory_masks(model, lambda: tr.track(model, video.frames, points, disjoint="memory"))
    assert len(seen) == video.frames.shape[0]  # one batched call per frame, all objects in it
    for masks in seen:  # (N, 1, S, S)
        assert masks.shape[0] == 3
        assert ((masks > 0).sum(dim=0) <= 1).all()
    assert "_batch_encode_memories" not in vars(model)  # the instance patch is gone
    plain, _ = _memory_masks(model, lambda: tr.track(model, video.frames, points))
    assert all(((m > 0).sum(dim=0) > 1).any() for m in plain)  # without it they overlap on every frame
    # the prompt frame has no memory yet, so its masks are the same, and only the constraint differs
    torch.testing.assert_close(seen[0], tr.non_overlapping(plain[0]))
    assert not torch.equal(seen[1], tr.non_overlapping(plain[1]))  # later frames read a different memory


def test_output_masks_are_disjoint_and_only_lose_overlaps(model):
    video, points = _video_and_points()
    handle = _overlapping(model)
    try:
        plain = tr.track(model, video.frames, points)
        out = tr.track(model, video.frames, points, disjoint="output")
        both = tr.track(model, video.frames, points, disjoint="both")
    finally:
        handle.remove()
    assert (plain.sum(axis=0) > 1).any()
    assert (out.sum(axis=0) <= 1).all()
    assert (out <= plain).all()  # nothing is added, only contested pixels are taken away
    assert (out.any(axis=0) == plain.any(axis=0)).all()  # every covered pixel keeps one owner
    assert both.shape == plain.shape and (both.sum(axis=0) <= 1).all()


def test_one_object_is_tracked_the_same_either_way(model):
    video, points = _video_and_points(objects=1)
    plain = tr.track(model, video.frames, points)
    assert np.array_equal(tr.track(model, video.frames, points, disjoint="both"), plain)


def test_unknown_mode_is_refused(model):
    video, points = _video_and_points(frames=2)
    with pytest.raises(UserError, match="disjoint='overlap' is not one of none, output, memory, both"):
        tr.track(model, video.frames, points, disjoint="overlap")


def test_evaluate_reports_the_mode(model):
    res = evaluate(model, TrackConfig(eval_videos=1, eval_frames=3, disjoint="both"))
    assert res["disjoint"] == "both"
    res = evaluate(model, TrackConfig(eval_videos=1, eval_frames=3), disjoint="output")
    assert res["disjoint"] == "output"
    with pytest.raises(Exception, match="disjoint"):
        TrackConfig(disjoint="sometimes")
