"""The batched training forward (vision/batched.py) against HF's per-object loop, its naive twin."""

import pytest
import torch

pytest.importorskip("transformers")  # the vision extra

from glassbox.vision import batched as bt
from glassbox.vision import track as tr
from glassbox.vision.train import RawMasks, TrackConfig, train_step


@pytest.fixture(scope="module", params=[False, True], ids=["one-mask", "multimask"])
def model(request):
    torch.set_num_threads(1)
    return tr.build_model(tr.small_config(multimask=request.param), seed=0)


def _run(model, cfg, batched):
    model.zero_grad(set_to_none=True)
    with RawMasks(model) as raw:
        loss, parts = train_step(model, cfg, 3, batched=batched)
        # every decoder call's raw logits and object scores, in frame then object order (a multimask
        # prompt frame has three candidates, the other frames one)
        logits = torch.cat([c[0].reshape(-1) for c in raw.calls])
        scores = torch.cat([c[1].reshape(-1) for c in raw.calls])
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), parts, logits.detach(), scores.detach(), grads


# point only; box corners plus the point; each with the other objects' points as negative clicks
@pytest.mark.parametrize("box_prob,negatives", [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_batched_train_step_equals_hfs_per_object_loop(model, box_prob, negatives):
    cfg = TrackConfig(frames=4, box_prob=box_prob, negatives=negatives)
    loss0, parts0, logits0, scores0, grads0 = _run(model, cfg, batched=False)
    loss1, parts1, logits1, scores1, grads1 = _run(model, cfg, batched=True)
    assert logits0.shape == logits1.shape and logits0.numel() >= 2 * 4 * 32 * 32  # 2+ objects, 4 frames
    if negatives == 0:  # both branches of the presence gate are exercised (this fresh model, this clip)
        assert (scores0 > 0).any() and (scores0 < 0).any()
    torch.testing.assert_close(logits1, logits0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores1, scores0, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=1e-6)
    assert parts1 == pytest.approx(parts0, rel=1e-5)
    assert set(grads1) == set(grads0)
    assert any(n.startswith("memory_attention.") for n in grads1)
    scale = max(g.abs().max() for g in grads0.values())
    for name, g in grads0.items():
        # attention key biases have zero gradient in exact arithmetic (softmax ignores a shift): atol
        torch.testing.assert_close(grads1[name], g, rtol=1e-3, atol=1e-5 * scale, msg=name)


def test_prompts_must_be_n_by_p(model):
    session = tr.new_session(model, torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(N, P, 2\)"):
        bt.add_prompts(session, 0, torch.zeros(2, 2), torch.ones(2, 1))


def test_multimask_selection_per_row_equals_hf_on_a_batch_of_one():
    # HF's selection broadcasts (B,) rows against (B, 1) choices; single_frame_forward redoes it per row.
    torch.manual_seed(1)
    mm = tr.build_model(tr.small_config(multimask=True), seed=1)
    pixels = torch.randn(3, 3, 64, 64)
    points = torch.tensor([[[[10.0, 12.0]]], [[[40.0, 30.0]]], [[[50.0, 8.0]]]])  # (B, 1, 1, 2)
    labels = torch.ones(3, 1, 1, dtype=torch.int32)
    with torch.no_grad():
        out = bt.single_frame_forward(mm, True, pixel_values=pixels, input_points=points, input_labels=labels)
        hf_wrong = mm._single_frame_forward(
            pixel_values=pixels, input_points=points, input_labels=labels, multimask_output=True
        )
        assert hf_wrong.high_res_masks.shape[:2] == (3, 3)  # the HF pitfall: every row against every choice
        for i in range(3):
            one = mm._single_frame_forward(
                pixel_values=pixels[i : i + 1],
                input_points=points[i : i + 1],
                input_labels=labels[i : i + 1],
                multimask_output=True,
            )
            for key in ("pred_masks", "high_res_masks", "object_pointer", "iou_scores"):
                torch.testing.assert_close(getattr(out, key)[i : i + 1], getattr(one, key), msg=key)


def _rows_per_frame(model, cfg, step):
    """Each frame's raw logits and object scores of a train step, one row per object: [(N, -1), (N,)]."""
    with RawMasks(model) as raw, torch.no_grad():
        train_step(model, cfg, step)
        calls = list(raw.calls)
    return [(c[0].reshape(c[0].shape[0], -1), c[1].reshape(-1)) for c in calls]


@pytest.mark.parametrize("box_prob", [0.0, 1.0])
def test_clips_batched_equal_each_clip_alone(model, box_prob):
    # Step 3 of a two-clip run holds the clips of steps 6 and 7 of a one-clip run, rows clip by clip.
    both = _rows_per_frame(model, TrackConfig(frames=4, box_prob=box_prob, clips=2), 3)
    first = _rows_per_frame(model, TrackConfig(frames=4, box_prob=box_prob), 6)
    second = _rows_per_frame(model, TrackConfig(frames=4, box_prob=box_prob), 7)
    assert len(both) == len(first) == len(second) == 4  # one decoder call per frame
    for (lg, sc), (lg0, sc0), (lg1, sc1) in zip(both, first, second, strict=True):
        assert lg.shape[0] == lg0.shape[0] + lg1.shape[0] >= 4
        torch.testing.assert_close(lg, torch.cat([lg0, lg1]), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(sc, torch.cat([sc0, sc1]), rtol=1e-4, atol=1e-6)
        # the two clips' first rows differ by 20x the tolerance above, so a mix-up of rows would show
        assert (lg0[0] - lg1[0]).abs().max() > 2e-4


def test_several_clips_need_the_batched_path(model):
    with pytest.raises(ValueError, match="clips=1"):
        train_step(model, TrackConfig(frames=2, clips=2), 0, batched=False)


def test_new_session_checks_the_object_counts(model):
    with pytest.raises(ValueError, match="positive count"):
        bt.new_session(model, torch.rand(2, 2, 3, 64, 64), [2])
