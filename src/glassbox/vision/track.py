"""Promptable video object tracking with Hugging Face's SAM 2 video classes (``Sam2VideoModel``).

Prompt an object with a point (optionally a box) on one frame; the model
segments it there, writes the result into its memory bank, and every later
frame attends to that memory (and the object pointers) to find the object
again, through occlusions. Frames before the prompt are tracked in reverse.

All the transformers 5.x pitfalls are handled here, once:

- the processor path imports torchvision, which does not load beside this
  torch: preprocessing (resize, ImageNet normalisation) and prompt scaling are
  done in torch (``preprocess``, ``add_prompt``);
- ``Sam2VideoInferenceSession``'s default ``dtype="float32"`` is a string and
  crashes in ``.to(dtype=...)``: sessions get ``torch.float32`` (``new_session``);
- ``memory_encoder_output_channels`` must be 64 (a hard-coded ``kv_in_dim`` in
  the memory attention) and ``fpn_hidden_size`` above 64 (``small_config``);
- an eval-mode mask decoder asked for one mask falls back to the multimask
  tokens when token 0's mask is unstable (``dynamic_multimask_via_stability``):
  off in ``small_config``, so training and tracking use the same single token;
- a fresh ``Sam2VideoModel`` draws two unrelated random Fourier matrices for
  the prompt's and the image's positional encodings (SAM shares one): tied
  in ``build_model``;
- HF initialises every layer with std 0.02, which shrinks the memory
  encoder's memories to noise beside their positional encodings, so the
  memory attention is ignored and all objects get one mask after frame 0:
  the memory path starts at unit gain in ``build_model`` (``_unit_gain_init``);
- the FPN neck's sine positional encoding is cached with ``lru_cache(maxsize=1)``
  but asked for four feature levels in turn, so it is recomputed on every
  call: 37 % of a 32-frame image-encoder forward here. A cache per shape in
  ``build_model`` and ``load_checkpoint`` (``_cache_neck_positions``);
- ``Sam2VideoModel.forward`` is wrapped in ``torch.inference_mode``;
  ``forward_frame(..., grad=True)`` calls the undecorated function, the same
  code path as inference;
- ``Sam2VideoModel.forward`` runs the objects of a frame one at a time, and
  its own batched paths fail for more than one (``.expand`` on a list, a
  ``squeeze(1)`` that only fits a batch of one): training runs a clip's
  objects as one batch in ``batched.py``, 1.2x faster a step, tested equal
  to ``forward_frame(..., grad=True)`` in masks, loss and gradients, so what
  is trained is exactly what tracks.

>>> import numpy as np, pytest
>>> _ = pytest.importorskip("transformers")  # the vision extra
>>> model = build_model(small_config())
>>> frames = np.random.default_rng(0).random((3, 3, 48, 40), dtype=np.float32)  # (T, 3, H, W)
>>> track(model, frames, points=[(20.0, 10.0)]).shape  # (N objects, T, H, W)
(1, 3, 48, 40)
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from glassbox.errors import UserError

if TYPE_CHECKING:
    from transformers import Sam2VideoConfig, Sam2VideoModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
Disjoint = Literal["none", "output", "memory", "both"]  # ``track``'s non-overlap modes
DISJOINT = get_args(Disjoint)


def small_config(
    image_size: int = 64,
    hidden: int = 128,
    memory_layers: int = 2,
    num_maskmem: int = 7,
    multimask: bool = False,
    backbone_width: int = 16,
) -> Sam2VideoConfig:
    """A SAM 2 video configuration small enough to train on a CPU (about 1.8 M parameters at the defaults).

    Hiera with patch stride 2 (not 4) so the top feature map is ``image_size / 8``
    and the low-resolution masks ``image_size / 2``: at 64 pixels a stride-4
    model would predict 16x16 masks, too coarse for digit boundaries.
    ``backbone_width`` is Hiera's first-stage width; it doubles at each of the four stages.
    """
    from transformers import Sam2VideoConfig

    s = image_size
    if s % 8:
        raise UserError(f"image_size must be a multiple of 8, got {s}")
    if hidden <= 64:
        # Pitfall: fpn_hidden_size must exceed 64 (the memory path mixes it with the 64 memory channels).
        raise UserError(f"hidden must be above 64, got {hidden}")
    top = s // 8
    return Sam2VideoConfig(
        image_size=s,
        vision_config={
            "model_type": "sam2_vision_model",
            "backbone_config": {
                "model_type": "sam2_hiera_det_model",
                "image_size": [s, s],
                "patch_stride": [2, 2],
                "hidden_size": backbone_width,
                "embed_dim_per_stage": [backbone_width * 2**i for i in range(4)],
                "blocks_per_stage": [1, 1, 2, 1],
                "num_attention_heads_per_stage": [1, 1, 2, 2],
                "window_size_per_stage": [8, 4, top, 4],
                "global_attention_blocks": [3],
                "window_positional_embedding_background_size": [4, 4],
            },
            "backbone_channel_list": [backbone_width * 2**i for i in (3, 2, 1, 0)],
            "backbone_feature_sizes": [[4 * top, 4 * top], [2 * top, 2 * top], [top, top]],
            "fpn_hidden_size": hidden,
        },
        prompt_encoder_config={"hidden_size": hidden, "image_size": s, "patch_size": 8},
        mask_decoder_config={
            "hidden_size": hidden,
            "mlp_dim": 256,
            "num_attention_heads": 4,
            "iou_head_hidden_dim": 64,
            # Pitfall: with multimask_output=False an eval-mode decoder swaps in the best of the three
            # multimask tokens whenever token 0's mask is "unstable", which a from-scratch model's
            # always is: the loss then lands on whichever token the untrained IoU head picks.
            "dynamic_multimask_via_stability": False,
        },
        # ``multimask``: three candidates for a single-point prompt on its frame (SAM 2's default);
        # otherwise one mask everywhere.
        multimask_output_in_sam=multimask,
        multimask_output_for_tracking=False,
        num_maskmem=num_maskmem,
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=memory_layers,
        memory_attention_feed_forward_hidden_size=256,
        memory_attention_dropout=0.0,
        memory_attention_rope_dropout=0.0,
        memory_attention_rope_feat_sizes=[top, top],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,  # pitfall: a hard-coded kv_in_dim = 64 in the memory attention
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=256,
    )


def build_model(config: Sam2VideoConfig, seed: int = 0) -> Sam2VideoModel:
    """A freshly initialised ``Sam2VideoModel`` (eval mode: see ``forward_frame``)."""
    from transformers import Sam2VideoModel

    torch.manual_seed(seed)
    model = Sam2VideoModel(config).eval()
    # Pitfall: the prompt encoder and the image-wide positional encoding each get their own random
    # Fourier matrix, where SAM shares one. A checkpoint carries equal copies; from scratch a point's
    # encoding lives in another basis than the image's. (Tied, the decoder still first ignores the
    # prompt: train.AttentionGuide is what breaks that.)
    with torch.no_grad():
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(
            model.shared_image_embedding.positional_embedding
        )
        # Pitfall: HF initialises every linear and conv layer with std 0.02 (initializer_range), so
        # each 1x1 layer of the memory encoder scales its input by ~0.2: its memories came out at
        # magnitude 0.05 beside positional encodings of 0.6, the memory attention added 1 % to the
        # frame's features, and every tracked object got the same mask from frame 1 on (measured).
        # The memory path starts at unit gain instead (std 1/sqrt(fan_in)), as SAM 2's own init does
        # more nearly (PyTorch defaults).
        for part in (model.memory_encoder, model.memory_attention, model.object_pointer_proj):
            _unit_gain_init(part)
    return _cache_neck_positions(model)


def _cache_neck_positions(model: Sam2VideoModel) -> Sam2VideoModel:
    """Keep the neck's positional encodings per (shape, device, dtype): they depend on nothing else.

    HF's own cache holds one entry and the neck asks for four shapes in turn, so every forward
    recomputed all four (sines and cosines of the full batch, 75 ms of 200 for 32 frames here).
    The tensors are read-only downstream, as HF's cached ones already are.
    """
    pe = model.vision_encoder.neck.position_encoding
    inner = pe.forward
    cache: dict[tuple[Any, ...], torch.Tensor] = {}

    def forward(shape: torch.Size, device: Any, dtype: torch.dtype, mask: Any = None) -> torch.Tensor:
        if mask is not None:
            return inner(shape, device, dtype, mask)
        # An encoding made under inference_mode may not enter a graph that trains: kept apart.
        key = (tuple(shape), str(device), dtype, torch.is_inference_mode_enabled())
        if key not in cache:
            if len(cache) >= 16:  # batch sizes differ between uses; keep it bounded
                cache.clear()
            cache[key] = inner(shape, device, dtype)
        return cache[key]

    pe.forward = forward  # an instance attribute: nn.Module.__call__ finds it first
    return model


def _unit_gain_init(module: torch.nn.Module) -> None:
    """Linear and conv weights ~ N(0, 1/fan_in), biases 0: activations keep their scale layer to layer."""
    for m in module.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            fan_in = m.weight[0].numel()
            torch.nn.init.normal_(m.weight, std=fan_in**-0.5)
            if m.bias is not None:
                torch.nn.init.zeros_(m.bias)


def load_checkpoint(path: str | Path) -> Sam2VideoModel:
    """A Hugging Face format SAM 2 video checkpoint from a local folder; never touches the network."""
    from transformers import Sam2VideoModel

    path = Path(path)
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a Hugging Face checkpoint folder (no config.json)")
    try:
        model = Sam2VideoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise UserError(
            f"cannot load a SAM 2 video checkpoint from {path}: {str(e).splitlines()[0]}"
        ) from None
    return _cache_neck_positions(model.eval())


def newest_checkpoint(out: str | Path = "runs") -> Path:
    """The checkpoint of the newest completed track run under ``out`` (a run of recipes/track.yaml)."""
    import json

    out = Path(out)
    found = []
    for meta in out.glob("*/meta.json") if out.is_dir() else []:
        try:
            info = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue
        ckpt = meta.parent / "checkpoint"
        if (
            info.get("kind") == "track"
            and info.get("status") == "completed"
            and (ckpt / "config.json").is_file()
        ):
            found.append((info.get("ended") or "", meta.parent.name, ckpt))
    if not found:
        raise UserError(
            f"no trained tracker under {out}/: train one with `glassbox train recipes/track.yaml`"
            " (or train_tracker in Python), or give --checkpoint DIR"
        )
    return max(found)[2]


def preprocess(frames: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """Frames ``(T, 3, H, W)`` in [0, 1] to the model's input: resized square, ImageNet-normalised.

    Done here in torch because the transformers processor needs torchvision.
    """
    x = torch.as_tensor(np.asarray(frames), dtype=torch.float32)  # (T, 3, H, W)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std  # (T, 3, S, S)


def new_session(model: Sam2VideoModel, pixel_values: torch.Tensor, grad: bool = False) -> Any:
    """An inference session over ``pixel_values`` (T, 3, S, S) with every frame's features encoded at once.

    Encoding the frames as one batch (and caching all of them, not the default
    one) is what makes training affordable: the session would otherwise run
    the image encoder frame by frame. One clip of one row: ``batched.new_session``.
    """
    from glassbox.vision.batched import new_session as clips_session

    return clips_session(model, pixel_values[None], [1], grad=grad)


def add_prompt(
    session: Any,
    obj_id: int,
    frame: int,
    point: tuple[float, float] | None,
    size: tuple[int, int],
    image_size: int,
    box: tuple[float, float, float, float] | None = None,
    negatives: list[tuple[float, float]] | None = None,
) -> None:
    """Prompt object ``obj_id`` on ``frame`` with a positive point (x, y) and/or a box (x1, y1, x2, y2).

    Coordinates are pixels of the original frame (``size`` = (H, W)); they are
    scaled to the model's square input, as the processor would. A box goes in
    as two corner points labelled 2 and 3, SAM 2's encoding; ``negatives`` are
    points that are not the object (label 0), put between the box and the point.
    """
    h, w = size
    sx, sy = image_size / w, image_size / h
    coords, labels = [], []
    if box is not None:
        x1, y1, x2, y2 = box
        coords += [[x1 * sx, y1 * sy], [x2 * sx, y2 * sy]]
        labels += [2, 3]
    for x, y in negatives or []:
        coords.append([x * sx, y * sy])
        labels.append(0)
    if point is not None:
        coords.append([point[0] * sx, point[1] * sy])
        labels.append(1)
    obj_idx = session.obj_id_to_idx(obj_id)
    session.add_point_inputs(
        obj_idx,
        frame,
        {
            "point_coords": torch.tensor([[coords]], dtype=torch.float32),  # (1, 1, P, 2)
            "point_labels": torch.tensor([[labels]], dtype=torch.int32),  # (1, 1, P)
        },
    )
    if obj_id not in session.obj_with_new_inputs:
        session.obj_with_new_inputs.append(obj_id)


def forward_frame(
    model: Sam2VideoModel, session: Any, frame: int, reverse: bool = False, grad: bool = False
) -> Any:
    """One step of the video model on ``frame``: masks of every prompted object, memory updated.

    ``grad=True`` calls the function under ``Sam2VideoModel.forward``'s
    ``torch.inference_mode`` decorator, so gradients flow through the memory
    bank (memory encoder, memory attention, object pointers) across frames.
    The model stays in eval mode either way: in train mode the HF code drops
    ``object_score_logits`` from its per-frame output and then fails on it.
    """
    if grad:
        return type(model).forward.__wrapped__(model, session, frame_idx=frame, reverse=reverse)
    return model(session, frame_idx=frame, reverse=reverse)


def check_point(point: tuple[float, float], size: tuple[int, int], what: str = "--point") -> None:
    """A prompt point must lie inside the frame (``size`` = (H, W))."""
    x, y = point
    h, w = size
    if not (0 <= x < w and 0 <= y < h):
        raise UserError(
            f"{what} {x:g},{y:g} is outside the {w}x{h} frame; x must be in [0, {w}), y in [0, {h})"
        )


def non_overlapping(logits: torch.Tensor) -> torch.Tensor:
    """Mask logits (N, ...) of N objects with each pixel left positive for at most one of them.

    SAM 2's ``_apply_non_overlapping_constraints``: where an object's logit is not
    the highest of the N at a pixel, it is clamped to at most -10; the winner's is kept.
    One object is returned unchanged.
    """
    if logits.shape[0] <= 1:
        return logits
    winner = logits.argmax(dim=0, keepdim=True)  # (1, ...)
    mine = torch.arange(logits.shape[0], device=logits.device).view(-1, *[1] * (logits.dim() - 1))
    return torch.where(winner == mine, logits, logits.clamp(max=-10.0))


class NonOverlappingMemory:
    """While active, the objects' masks of a frame are made disjoint (``non_overlapping``) before
    HF's ``_batch_encode_memories`` writes them into the memory bank.

    SAM 2's ``non_overlap_masks_for_mem_enc``, which HF's ``Sam2VideoModel`` lacks: the memory
    of a frame where one object's mask spread over another digit then holds each pixel for one
    object only, so the spill is not carried to the next frames. Patched on the instance and
    restored on exit.
    """

    def __init__(self, model: Sam2VideoModel) -> None:
        self.model = model

    def __enter__(self) -> NonOverlappingMemory:
        original = type(self.model)._batch_encode_memories.__get__(self.model)

        def encode(*args: Any, **kwargs: Any) -> Any:
            masks = kwargs.get("high_res_masks_for_memory")
            if masks is None or args:  # HF calls it with keywords only; anything else passes untouched
                return original(*args, **kwargs)
            if len(masks) > 1:
                kwargs["high_res_masks_for_memory"] = list(non_overlapping(torch.cat(masks)).split(1))
            return original(**kwargs)

        self.model._batch_encode_memories = encode
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.model._batch_encode_memories


def track(
    model: Sam2VideoModel,
    frames: np.ndarray,
    points: list[tuple[float, float] | None],
    frame: int = 0,
    boxes: list[tuple[float, float, float, float] | None] | None = None,
    negatives: bool = False,
    disjoint: Disjoint = "none",
) -> np.ndarray:
    """Masks ``(N, T, H, W)`` bool of the N prompted objects through ``frames`` (T, 3, H, W) in [0, 1].

    Object i is prompted with ``points[i]`` (and ``boxes[i]``) on ``frame``;
    tracking runs forward to the end, then backward from the prompt frame to the start.
    ``negatives`` adds the other objects' points to each object's prompt as negative clicks
    (for a model trained with them: ``TrackConfig.negatives``). ``disjoint`` makes the objects'
    masks disjoint per pixel (``non_overlapping``): "output" in the returned masks, "memory" in
    what the memory bank stores, "both", or "none".
    """
    if disjoint not in DISJOINT:
        raise UserError(f"disjoint={disjoint!r} is not one of {', '.join(DISJOINT)}")
    frames = np.asarray(frames)
    t_count, h, w = frames.shape[0], frames.shape[2], frames.shape[3]
    if not 0 <= frame < t_count:
        raise UserError(f"--frame {frame} is outside the video, which has frames 0 to {t_count - 1}")
    boxes = boxes or [None] * len(points)
    for p in points:
        if p is not None:
            check_point(p, (h, w))
    s = model.config.image_size
    memory = NonOverlappingMemory(model) if disjoint in ("memory", "both") else contextlib.nullcontext()
    with torch.inference_mode(), memory:
        session = new_session(model, preprocess(frames, s))
        for i, (p, b) in enumerate(zip(points, boxes, strict=True)):
            others = [q for k, q in enumerate(points) if k != i and q is not None] if negatives else []
            add_prompt(session, i + 1, frame, p, (h, w), s, box=b, negatives=others)
        logits: dict[int, torch.Tensor] = {}
        order = [(t, False) for t in range(frame, t_count)] + [(t, True) for t in range(frame - 1, -1, -1)]
        for t, reverse in order:
            out = forward_frame(model, session, t, reverse=reverse)
            logits[t] = out.pred_masks[:, 0]  # (N, s/2, s/2)
        stacked = torch.stack([logits[t] for t in range(t_count)], dim=1)  # (N, T, s/2, s/2)
        up = F.interpolate(stacked.float(), size=(h, w), mode="bilinear", align_corners=False)  # (N, T, H, W)
        if disjoint in ("output", "both"):  # at the frame's resolution, as SAM 2's video predictor does
            up = non_overlapping(up)
    return (up > 0).numpy()


def parse_point(text: str, what: str = "--point") -> tuple[float, float]:
    """``"X,Y"`` as two floats, or a UserError naming the expected form."""
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{what} must be X,Y in pixels (e.g. 32,20), got {text!r}") from None
    return x, y


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"X1,Y1,X2,Y2"`` as four floats."""
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"--box must be X1,Y1,X2,Y2 in pixels, got {text!r}") from None
    if x2 <= x1 or y2 <= y1:
        raise UserError(f"--box {text}: need X1 < X2 and Y1 < Y2")
    return x1, y1, x2, y2


def track_folder(
    frames_dir: str | Path,
    points: list[tuple[float, float]],
    frame: int = 0,
    box: tuple[float, float, float, float] | None = None,
    checkpoint: str | Path | None = None,
    out: str | Path = "runs",
    runs: str | Path | None = None,
) -> Any:
    """Track prompted objects through a folder of frames; returns the ``Run`` that holds the result.

    One object per point of ``points`` (or one object for ``box`` alone, or the
    box with one point). With several objects each one's prompt also carries
    the others' points as negative clicks, as the recipe's tracker is trained
    (``TrackConfig.negatives``). The run holds ``masks/<frame name>.png`` (one
    per frame, 0/255) for one object, ``masks/<k>/<frame name>.png`` for
    object k = 1..N of several, ``overlay.png`` (a contact sheet) and
    ``track.json``; all go through the ledger. Without ``checkpoint`` the
    newest trained tracker under ``runs`` (default: ``out``) is used.
    """
    from glassbox.run import Run
    from glassbox.vision.overlay import contact_sheet, mask_png
    from glassbox.vision.video import load_frames

    if not points and box is None:
        raise UserError("give a prompt: --point X,Y (and/or --box X1,Y1,X2,Y2)")
    if box is not None and len(points) > 1:
        raise UserError("--box prompts one object: give it with at most one --point")
    video = load_frames(frames_dir)
    t_count, _, h, w = video.frames.shape
    for point in points:
        check_point(point, (h, w))
    if box is not None:
        check_point(box[:2], (h, w), "--box corner")
        check_point((box[2] - 1e-6, box[3] - 1e-6), (h, w), "--box corner")
    if not 0 <= frame < t_count:
        raise UserError(f"--frame {frame} is outside the video, which has frames 0 to {t_count - 1}")
    ckpt = (
        Path(checkpoint) if checkpoint is not None else newest_checkpoint(runs if runs is not None else out)
    )
    model = load_checkpoint(ckpt)
    prompts: list[tuple[float, float] | None] = list(points) or [None]
    boxes = [box] * len(prompts)  # a box comes with at most one point (checked above)
    masks = track(model, video.frames, prompts, frame=frame, boxes=boxes, negatives=True)  # (N, T, H, W)
    run = Run.create(out, "track-video", kind="track-video")
    with run:
        names = video.names or [f"{t:05d}.png" for t in range(t_count)]
        for k in range(len(masks)):
            folder = "masks" if len(masks) == 1 else f"masks/{k + 1}"
            for t, name in enumerate(names):
                run.write_bytes(f"{folder}/{Path(name).stem}.png", mask_png(masks[k, t]))
        cols = min(t_count, 8)
        run.write_bytes("overlay.png", contact_sheet(video.frames, masks, cols=cols))
        summary = {
            "frames_dir": str(frames_dir),
            "frames": t_count,
            "size": [w, h],
            "prompt": {"frame": frame, "points": points, "box": box},
            "checkpoint": str(ckpt),
            "objects": len(masks),
            "mask_area": [[int(a) for a in m.sum(axis=(1, 2))] for m in masks],  # per object, per frame
        }
        run.write_json("track.json", summary)
        run.update_meta(results={"frames": t_count, "checkpoint": str(ckpt)})
    return run
