import json
import math
import os

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")  # the vision extra; the core installs without it
from PIL import Image

from glassbox.errors import UserError
from glassbox.ledger.verify import verify_run
from glassbox.run import Run
from glassbox.vision import track as tr
from glassbox.vision.train import (
    AttentionGuide,
    RawMasks,
    TrackConfig,
    TrackLossConfig,
    _loss,
    _lr,
    _with_negatives,
    evaluate,
    image_step,
    load_config,
    train_step,
)
from glassbox.vision.video import load_frames, moving_digits, save_frames


@pytest.fixture(scope="module")
def model():
    import torch

    torch.set_num_threads(1)
    return tr.build_model(tr.small_config(), seed=0)


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    """A finished track run with the (untrained) model's checkpoint, as train_tracker leaves one."""
    out = tmp_path_factory.mktemp("runs")
    with Run.create(out, "track", kind="track") as run:
        model.save_pretrained(run.path / "checkpoint")
        run.record("checkpoint", [str(p.relative_to(run.path)) for p in (run.path / "checkpoint").iterdir()])
    return out, run.path / "checkpoint"


def _cli(argv, capsys):
    from glassbox.cli import main as cli_main
    from glassbox.cli import track as track_cli

    if "track" not in {c.name for c in cli_main.app.registered_commands}:
        track_cli.register(cli_main.app)
    code = cli_main.main(argv)
    return code, capsys.readouterr()


def test_track_shapes_and_reverse(model):
    v = moving_digits(0, frames=5, objects=2)
    masks = tr.track(model, v.frames, [(20.0, 20.0), (40.0, 40.0)], frame=2)
    assert masks.shape == (2, 5, 64, 64) and masks.dtype == bool


def test_neck_positions_are_cached_per_shape_and_unchanged(model):
    pe = model.vision_encoder.neck.position_encoding
    shapes = [torch.Size((2, 128, n, n)) for n in (32, 16, 8, 4)]
    first = [pe(s, "cpu", torch.float32) for s in shapes]
    again = [pe(s, "cpu", torch.float32) for s in shapes]
    assert all(a is b for a, b in zip(first, again, strict=True))  # HF's one-entry cache missed all four
    fresh = type(pe)(num_position_features=64, normalize=True)  # HF's own, uncached by us
    assert all(torch.equal(a, fresh(s, "cpu", torch.float32)) for a, s in zip(first, shapes, strict=True))


def test_point_outside_frame(model):
    v = moving_digits(0, frames=2)
    with pytest.raises(UserError, match="outside the 64x64 frame"):
        tr.track(model, v.frames, [(64.0, 3.0)])


def test_train_step_has_gradients_through_memory(model):
    cfg = TrackConfig(frames=3)
    loss, parts = train_step(model, cfg, 0)
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    model.zero_grad(set_to_none=True)
    assert any(n.startswith("memory_attention.") for n in grads)
    assert any(n.startswith("memory_encoder.") for n in grads)
    assert set(parts) == {"focal", "dice", "score"}


def test_image_step_trains_encoder_and_decoder(model):
    loss, parts = image_step(model, TrackConfig(image_batch=4), 0)
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    model.zero_grad(set_to_none=True)
    assert any(n.startswith("vision_encoder.") for n in grads)
    assert any(n.startswith("mask_decoder.") for n in grads)
    assert parts["focal"] > 0 and 0 < parts["dice"] <= 1
    assert 0 < parts["attention"] < 10  # cross-entropy over the 8x8 attention grid: log(64) = 4.2 if uniform


def test_negatives_go_before_the_point_padded_to_one_batch():
    points = [[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[1.0, 1.0]]]  # a box and a point; a point alone
    labels = [[2, 3, 1], [1]]
    negatives = [[(10.0, 10.0)], [(20.0, 20.0), (30.0, 30.0)]]
    pts, lab = _with_negatives(points[:1] * 2, labels[:1] * 2, negatives, scale=0.5)
    assert lab == [[2, 3, 0, -1, 1], [2, 3, 0, 0, 1]]  # the point stays last, where the guide reads it
    assert pts[0] == [[1.0, 2.0], [3.0, 4.0], [5.0, 5.0], [0.0, 0.0], [5.0, 6.0]]  # negatives scaled
    assert pts[1][2:4] == [[10.0, 10.0], [15.0, 15.0]]
    _, lab = _with_negatives(points[1:], labels[1:], [[]], scale=1.0)
    assert lab == [[1]]


def _prompt_labels(model, run):
    seen = []

    def grab(_module, args, kwargs, _out):
        labels = kwargs["input_labels"] if "input_labels" in kwargs else args[1]
        if labels is not None:
            seen.append(labels.clone())

    hook = model.prompt_encoder.register_forward_hook(grab, with_kwargs=True)
    try:
        run()
    finally:
        hook.remove()
    return seen


def test_image_and_video_steps_prompt_with_the_other_objects_points(model):
    cfg = TrackConfig(image_batch=24, box_prob=0.0, negatives=1.0, frames=2)
    seen = _prompt_labels(model, lambda: image_step(model, cfg, 0))
    labels = seen[0][:, 0]  # (B, P)
    assert (labels[:, -1] == 1).all() and (labels[:, :-1] <= 0).all()
    assert (labels == 0).any() and (labels == -1).any()  # frames with 2 and 3 promptable digits, padded
    seen = _prompt_labels(model, lambda: train_step(model, cfg, 0))
    first = seen[0][:, 0]  # the prompt frame: each object's point after the others'
    n = first.shape[0]
    assert first.tolist() == [[0] * (n - 1) + [1]] * n
    without = _prompt_labels(model, lambda: train_step(model, cfg.model_copy(update={"negatives": 0.0}), 0))
    assert without[0][:, 0].tolist() == [[1]] * n


def test_track_adds_the_other_objects_points_as_negatives(model):
    video = moving_digits(seed=3, frames=2, size=64, objects=3)
    points = [(float(np.nonzero(m)[1][0]), float(np.nonzero(m)[0][0])) for m in video.masks[:, 0]]
    seen = _prompt_labels(model, lambda: tr.track(model, video.frames, points, negatives=True))
    assert [x.flatten().tolist() for x in seen[:3]] == [[0, 0, 1]] * 3
    seen = _prompt_labels(model, lambda: tr.track(model, video.frames, points))
    assert [x.flatten().tolist() for x in seen[:3]] == [[1]] * 3


def test_attention_guide_recomputes_the_decoders_attention(model):
    # softmax(q k^T * scale) from the hook, applied to the values, must give the module's own output.
    seen = []
    mods = AttentionGuide(model).modules

    def keep(mod, _args, kwargs, out):
        seen.append((mod, kwargs["value"], out[0]))

    handles = [m.register_forward_hook(keep, with_kwargs=True) for m in mods]
    guide = AttentionGuide(model)
    try:
        with torch.no_grad(), guide:
            model._single_frame_forward(
                pixel_values=torch.randn(2, 3, 64, 64),
                input_points=torch.tensor([[[[10.0, 10.0]]], [[[40.0, 30.0]]]]),
                input_labels=torch.ones(2, 1, 1, dtype=torch.int32),
                multimask_output=False,
            )
    finally:
        for h in handles:
            h.remove()
    assert len(guide.calls) == len(seen) == len(model.mask_decoder.transformer.layers) + 1
    for probs, (mod, value, out) in zip(guide.calls, seen, strict=True):
        b, heads, tokens, hw = probs.shape
        assert hw == 64 and torch.allclose(probs.sum(-1), torch.ones(b, heads, tokens), atol=1e-5)
        v = mod.v_proj(value).reshape(b, hw, heads, mod.head_dim).transpose(1, 2)  # (B, heads, HW, hd)
        mixed = (probs @ v).transpose(1, 2).reshape(b, 1, tokens, heads * mod.head_dim)
        assert torch.allclose(mod.o_proj(mixed), out, atol=1e-5)


def test_attention_guide_loss_is_cross_entropy_to_the_pooled_mask():
    guide = AttentionGuide.__new__(AttentionGuide)
    guide.modules = [None]  # one attention module
    gt = torch.zeros(1, 16, 16, dtype=torch.bool)
    gt[0, :8, :4] = True  # on a 4x4 grid: cells (0, 0) and (1, 0), half the mass each
    uniform = torch.full((1, 2, 3, 16), 1 / 16)  # (B, heads, tokens, HW)
    guide.calls = [uniform]
    assert float(guide.loss(gt, [0, 2])) == pytest.approx(math.log(16), rel=1e-5)
    exact = torch.zeros(1, 2, 3, 16)
    exact[..., [0, 4]] = 0.5
    guide.calls = [exact]
    assert float(guide.loss(gt, [1])) == pytest.approx(math.log(2), abs=1e-4)
    guide.calls = [uniform]
    empty = torch.zeros(2, 16, 16, dtype=torch.bool)
    empty[1] = gt[0]  # an object with no visible pixel is left out
    guide.calls = [uniform.expand(2, -1, -1, -1)]
    assert float(guide.loss(empty, [0])) == pytest.approx(math.log(16), rel=1e-5)


def test_memory_path_starts_at_unit_gain(model):
    # std 1/sqrt(fan_in), zero bias (not HF's 0.02 everywhere, which shrank memories to ~0.05).
    conv = torch.nn.Conv2d(32, 16, kernel_size=3)
    lin = torch.nn.Linear(400, 300)
    tr._unit_gain_init(torch.nn.Sequential(conv, lin))
    assert float(conv.weight.std()) == pytest.approx((32 * 9) ** -0.5, rel=0.05)
    assert float(lin.weight.std()) == pytest.approx(400**-0.5, rel=0.05)
    assert not conv.bias.any() and not lin.bias.any()
    proj = model.memory_encoder.projection
    assert float(proj.weight.std()) == pytest.approx(proj.weight[0].numel() ** -0.5, rel=0.2)
    # A frame's features go through the memory encoder with their scale kept (within 10x).
    feats = torch.randn(1, proj.in_channels, 8, 8)
    with torch.no_grad():
        mem, _ = model.memory_encoder(feats, torch.rand(1, 1, 128, 128))  # masks at 4x the mask input size
    assert 0.1 < float(mem.std()) < 10


def test_train_step_guides_attention_on_every_frame(model):
    cfg = TrackConfig(frames=2, loss=TrackLossConfig(video_attention=1.0))
    loss, parts = train_step(model, cfg, 1)
    loss.backward()
    model.zero_grad(set_to_none=True)
    assert 0 < parts["attention"] < 10


def test_small_config_tracks_with_one_mask_token(model):
    # Pitfall guarded in small_config: no fallback to the multimask tokens in eval mode.
    assert model.mask_decoder.dynamic_multimask_via_stability is False
    shared = model.shared_image_embedding.positional_embedding
    assert torch.equal(model.prompt_encoder.shared_embedding.positional_embedding, shared)


def test_raw_masks_keep_logits_the_object_score_gates(model):
    # An object scored absent gets a constant mask from HF; the hook keeps the decoder's own logits.
    with torch.no_grad(), RawMasks(model) as raw:
        out = model._single_frame_forward(
            pixel_values=torch.randn(2, 3, 64, 64),
            input_points=torch.tensor([[[[10.0, 10.0]]], [[[40.0, 30.0]]]]),
            input_labels=torch.ones(2, 1, 1, dtype=torch.int32),
            multimask_output=False,
        )
        logits, score, iou = raw.take()
    assert logits.shape == (2, 1, 32, 32) and score.shape == (2,) and iou.shape == (2, 1)
    for i in range(2):
        if score[i] > 0:
            assert torch.equal(out.pred_masks[i, 0], logits[i, 0])
        else:
            assert (out.pred_masks[i] == -1024.0).all() and logits[i].std() > 0


def test_focal_loss_matches_its_definition():
    # FL = -alpha_t (1 - p_t)^gamma log(p_t) (Lin et al. 2017), averaged over pixels.
    def fl(z: float, y: bool) -> float:
        p = 1 / (1 + math.exp(-z))
        p_t = p if y else 1 - p
        return -(0.25 if y else 0.75) * (1 - p_t) ** 2 * math.log(p_t)

    lc = TrackLossConfig(focal=1.0, bce=0.0, dice=0.0, object_score=0.0)
    for z, y in [(2.0, True), (-1.0, True), (0.5, False)]:
        logits = torch.tensor([[[z, 3.0]]])  # (1, 1, 2): the second pixel keeps the object visible
        gt = torch.tensor([[[y, True]]])
        total, _, _ = _loss(logits, torch.tensor([1.0]), gt, lc)
        assert float(total) == pytest.approx((fl(z, y) + fl(3.0, True)) / 2, rel=1e-5)


def test_multimask_loss_trains_the_best_candidate_and_the_iou_head():
    # SAM: the loss of each object is that of its best candidate; the IoU head regresses every
    # candidate's actual IoU, so inference (highest predicted IoU) keeps the right one.
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, :2] = True
    gt[1, :, :1] = True
    right, wrong = gt.float() * 20 - 10, (~gt).float() * 20 - 10  # (2, 4, 4) logits
    logits = torch.stack([wrong, right, wrong], dim=1)  # (2, 3, 4, 4): candidate 1 is right
    iou = torch.tensor([[0.5, 0.5, 0.5], [0.0, 1.0, 0.0]])
    lc = TrackLossConfig(object_score=0.0, iou=1.0)
    total, parts, best = _loss(logits, torch.ones(2), gt, lc, iou)
    assert best.tolist() == [1, 1]
    single, _, _ = _loss(right, torch.ones(2), gt, lc)  # the best candidate alone
    # actual IoUs are 0, 1, 0 for both objects: MSE = (0.25 * 3 + 0) / 6
    assert parts["iou"] == pytest.approx(0.125)
    assert float(total) == pytest.approx(float(single) + 0.125, rel=1e-5)


def test_multimask_image_step_and_batched_video_step(model):
    mm = tr.build_model(tr.small_config(multimask=True), seed=0)
    loss, parts = image_step(mm, TrackConfig(image_batch=4, box_prob=0.0), 0)
    assert "iou" in parts and torch.isfinite(loss)
    cfg = TrackConfig(frames=3, box_prob=0.0)
    with RawMasks(mm) as raw:
        loss, parts = train_step(mm, cfg, 0)
        shapes = [c[0].shape[2] for c in raw.calls]
    assert shapes[0] == 3 and set(shapes[1:]) == {1}  # candidates on the prompt frame only
    assert "iou" in parts and torch.isfinite(loss)


def test_backbone_width_doubles_per_stage():
    cfg = tr.small_config(backbone_width=24).vision_config
    assert cfg.backbone_config.embed_dim_per_stage == [24, 48, 96, 192]
    assert cfg.backbone_channel_list == [192, 96, 48, 24]
    assert load_config({"model": {"backbone_width": 32}}).model.backbone_width == 32


def test_lr_schedule_per_stage_peak():
    cfg = TrackConfig(lr=1e-3, warmup=10)
    assert _lr(cfg, 0, 0.0) == pytest.approx(1e-4)  # warm-up: step 1 of 10
    assert _lr(cfg, 100, 0.0, peak=3e-4) == pytest.approx(3e-4)
    assert _lr(cfg, 100, 0.5, peak=3e-4) == pytest.approx(1.5e-4)  # cosine half-way
    assert _lr(cfg, 100, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_config_is_strict():
    with pytest.raises(UserError, match="lr_typo"):
        load_config({"lr_typo": 1})
    assert load_config("src/glassbox/recipes/track.yaml").kind == "track"


def test_evaluate_runs(model):
    res = evaluate(model, TrackConfig(eval_videos=1, eval_frames=3))
    assert 0.0 <= res["mean_jf"] <= 1.0 and res["videos"] == 1 and res["prompt"] == "point"
    assert res["jf_se"] is None  # no spread from one video
    res = evaluate(model, TrackConfig(eval_videos=3, eval_frames=3), box=True)
    assert 0.0 <= res["mean_jf"] <= 1.0 and res["prompt"] == "point+box"
    per = np.array(res["per_video_jf"])  # rounded to 4 places
    assert res["jf_se"] == pytest.approx(per.std(ddof=1) / np.sqrt(3), abs=1e-4)


def test_cli_round_trip_offline(checkpoint, model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, ckpt = checkpoint
    v = moving_digits(2, frames=4)
    save_frames(v, tmp_path / "frames")
    code, io = _cli(
        [
            "track",
            str(tmp_path / "frames"),
            "--point",
            "30,30",
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "a"),
            "--json",
        ],
        capsys,
    )
    assert code == 0, io.err
    run_a = next((tmp_path / "a").iterdir())
    # No --checkpoint: the newest finished track run under --out is found.
    code, io = _cli(["track", str(tmp_path / "frames"), "--point", "30,30", "--out", str(out)], capsys)
    assert code == 0, io.err
    run_b = next(p for p in out.iterdir() if "track-video" in p.name)
    names = sorted(p.name for p in (run_a / "masks").iterdir())
    assert names == [f"{t:05d}.png" for t in range(4)]
    for name in names:
        a = np.asarray(Image.open(run_a / "masks" / name))
        b = np.asarray(Image.open(run_b / "masks" / name))
        assert np.array_equal(a, b)
    # The masks equal those of the in-memory model: save_pretrained + from_pretrained is exact.
    direct = tr.track(model, load_frames(tmp_path / "frames").frames, [(30.0, 30.0)])
    for t, name in enumerate(names):
        assert np.array_equal(np.asarray(Image.open(run_a / "masks" / name)) > 0, direct[0, t])
    assert verify_run(run_a).ok and verify_run(run_b).ok  # the ledger covers every file written
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_cli_several_objects_one_point_each(checkpoint, model, tmp_path, capsys):
    _, ckpt = checkpoint
    v = moving_digits(5, frames=3, objects=2)
    save_frames(v, tmp_path / "frames")
    points = [(float(np.nonzero(m)[1][0]), float(np.nonzero(m)[0][0])) for m in v.masks[:, 0]]
    args = ["track", str(tmp_path / "frames"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")]
    for x, y in points:
        args += ["--point", f"{x:g},{y:g}"]
    code, io = _cli([*args, "--json"], capsys)
    assert code == 0, io.err
    summary = json.loads(io.out)
    assert summary["objects"] == 2 and len(summary["mask_area"]) == 2
    run = next((tmp_path / "o").iterdir())
    frames = load_frames(tmp_path / "frames").frames  # as written (8-bit PNG)
    direct = tr.track(model, frames, points, negatives=True)  # each prompt marks the other's point
    for k in (1, 2):
        names = sorted(p.name for p in (run / "masks" / str(k)).iterdir())
        assert names == [f"{t:05d}.png" for t in range(3)]
        for t, name in enumerate(names):
            assert np.array_equal(np.asarray(Image.open(run / "masks" / str(k) / name)) > 0, direct[k - 1, t])
    assert verify_run(run).ok
    code, io = _cli([*args, "--box", "1,1,20,20"], capsys)
    assert code == 2 and "--box prompts one object" in io.err


def test_cli_bad_input_is_one_line_exit_2(tmp_path, checkpoint, capsys):
    _, ckpt = checkpoint
    empty = tmp_path / "empty"
    empty.mkdir()
    code, io = _cli(["track", str(empty), "--point", "1,1", "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and "has no frames" in io.err and io.err.count("\n") == 1
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (8, 8)).save(mixed / "a.png")
    Image.new("RGB", (8, 9)).save(mixed / "b.png")
    code, io = _cli(["track", str(mixed), "--point", "1,1", "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and "frames differ in size" in io.err and io.err.count("\n") == 1
    good = tmp_path / "good"
    save_frames(moving_digits(0, frames=2), good)
    code, io = _cli(["track", str(good), "--point", "70,5", "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and "outside the 64x64 frame" in io.err and io.err.count("\n") == 1
    code, io = _cli(["track", str(good), "--point", "5", "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and "X,Y" in io.err
    code, io = _cli(["track", str(good), "--point", "5,5", "--out", str(tmp_path / "none")], capsys)
    assert code == 2 and "no trained tracker" in io.err


def test_train_tracker_logs_mixed_multimask_and_box_batches(tmp_path):
    # Box batches decode one mask and have no IoU loss: the log window averages what each step has.
    from glassbox.vision.train import train_tracker

    cfg = {
        "kind": "track",
        "max_minutes": 0.08,
        "image_minutes": 0.05,
        "image_batch": 4,
        "frames": 3,
        "log_every": 4,
        "eval_videos": 1,
        "eval_frames": 3,
        "report": False,
        "model": {"multimask": True},
    }
    run = train_tracker(cfg, out=tmp_path)
    rows = [r for r in map(json.loads, (run.path / "metrics.jsonl").read_text().splitlines()) if "stage" in r]
    assert rows and all(math.isfinite(r["train_loss"]) for r in rows)
    assert any("iou" in r for r in rows if r["stage"] == "image")
    assert (run.path / "checkpoint").is_dir()
