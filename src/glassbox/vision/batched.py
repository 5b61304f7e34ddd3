"""Every object of a clip tracked as one batch: the training forward of the video model.

``Sam2VideoModel.forward`` loops over the objects of a session one at a time
("per-object inputs (clicks/masks) can differ across objects"): on a clip of
three digits, a frame is three memory-attention calls and three mask-decoder
calls, each on a batch of one. On this CPU a call on 8x8 features is mostly
fixed cost, so a training step was dominated by the count of small calls,
not by arithmetic. SAM 2's own video predictor batches objects; HF's does not.

In training every object of a clip has the same history (all prompted on
frame 0 with the same number of prompt points, then tracked over the same
frames), so the N objects can ride in the batch dimension of one
pseudo-object of the HF session: its point inputs are (N, 1, P, 2), its
stored memories (HW, N, C) and object pointers (N, C). Each step below is the
HF method it replaces, for a batch of N instead of 1:

- ``Sam2VideoModel._run_single_frame_inference``: its ``batch_size > 1`` path
  calls ``.expand`` on a list of feature maps and fails, so the features are
  expanded here;
- ``Sam2VideoModel._prepare_memory_conditioned_features``: it reshapes the
  memory attention's (1, N, HW, C) output with ``squeeze(1)``, right only for
  N = 1, so the memory attention is called here and reshaped for any N (the
  memory gathering reuses HF's helpers unchanged);
- ``Sam2VideoModel._batch_encode_memories``: one object of batch N.
- ``Sam2VideoModel._single_frame_forward`` with ``multimask_output=True``
  keeps each row's best candidate by indexing (B,) rows with (B, 1) choices,
  which broadcasts to (B, B) for a batch above one (masks, memories and
  object pointers of every row against every choice): ``single_frame_forward``
  redoes that selection per row (used by the image stage too).

Several clips ride the same way (``new_session`` over K clips): the rows of
the pseudo-object are then every object of every clip, each row reading its
own clip's features. Nothing in the memory path mixes rows (memories,
pointers and attention are per row), so a row's masks are those of its clip
run alone (tested); the image encoder sees the K clips' frames as one batch.

HF's per-object loop (``track.forward_frame``) is the naive twin: the tests
hold masks, object scores, the loss and its gradients equal to it, so what is
trained this way is what ``track.track`` runs. Inference keeps HF's loop.

>>> import numpy as np, pytest, torch
>>> _ = pytest.importorskip("transformers")  # the vision extra
>>> from glassbox.vision import track as tr
>>> model = tr.build_model(tr.small_config())
>>> session = tr.new_session(model, torch.rand(2, 3, 64, 64))
>>> points = torch.tensor([[[10.0, 20.0]], [[40.0, 30.0]]])  # (N, P, 2): one point for each of 2 objects
>>> add_prompts(session, 0, points, torch.ones(2, 1, dtype=torch.int32))
>>> with torch.inference_mode():
...     masks, scores = forward_frame(model, session, 0)
>>> masks.shape, scores.shape  # (N, 1, h, w) low-resolution logits, (N, 1, 1) object scores
(torch.Size([2, 1, 32, 32]), torch.Size([2, 1, 1]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

_OBJ = 0  # the pseudo-object's index in the session; its id is 1


def new_session(model: Any, clips: torch.Tensor, objects: Sequence[int], grad: bool = False) -> Any:
    """A session over K clips ``clips`` (K, T, 3, S, S) whose pseudo-object has one row per object.

    ``objects[k]`` is clip k's object count; rows come clip by clip, so row r
    reads the features of its own clip on every frame: each frame's cache
    holds (HW, N, C) features for N = sum(objects) rows (``forward_frame``
    expands a (HW, 1, C) one-clip cache to N the same way). All K * T frames
    go through the image encoder as one batch.
    """
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

    k, t = clips.shape[:2]
    if len(objects) != k or min(objects) < 1:
        raise ValueError(f"objects must give a positive count for each of the {k} clips, got {list(objects)}")
    session = Sam2VideoInferenceSession(
        video=clips[0],  # read for its frame count only: every frame's features are cached below
        video_height=clips.shape[-2],
        video_width=clips.shape[-1],
        dtype=torch.float32,  # pitfall: the default is the string "float32", which crashes in .to(dtype=...)
        max_vision_features_cache_size=t,
    )
    with torch.set_grad_enabled(grad), torch.inference_mode(not grad):
        feats = model.get_image_features(clips.flatten(0, 1), return_dict=True)  # (HW, K*T, C) each
    clip_of_row = torch.repeat_interleave(torch.arange(k), torch.as_tensor(list(objects)))  # (N,)
    for f in range(t):
        rows = clip_of_row * t + f  # (N,): frame f of each row's clip, clip-major as flattened
        session.cache.cache_vision_features(
            f,
            {
                "vision_feats": [x[:, rows] for x in feats.fpn_hidden_states],  # (HW, N, C) each
                "vision_pos_embeds": [x[:, f : f + 1] for x in feats.fpn_position_encoding],  # one for all
            },
        )
    return session


def add_prompts(session: Any, frame: int, coords: torch.Tensor, labels: torch.Tensor) -> None:
    """Prompt N objects on ``frame``: ``coords`` (N, P, 2) in model-input pixels, ``labels`` (N, P).

    Every object gets the same number P of prompt points (a box is two of them,
    labelled 2 and 3, as ``track.add_prompt`` writes it).
    """
    if coords.ndim != 3 or labels.shape != coords.shape[:2]:
        raise ValueError(
            f"coords must be (N, P, 2) and labels (N, P), got {tuple(coords.shape)}, {tuple(labels.shape)}"
        )
    obj_idx = session.obj_id_to_idx(1)
    session.add_point_inputs(
        obj_idx,
        frame,
        # (N, 1, P, 2) and (N, 1, P): N images of one prompt each
        {"point_coords": coords[:, None].float(), "point_labels": labels[:, None].int()},
    )
    if 1 not in session.obj_with_new_inputs:
        session.obj_with_new_inputs.append(1)


def _memory_conditioned(
    model: Any, session: Any, frame: int, is_init: bool, feats: torch.Tensor, pos: torch.Tensor
) -> torch.Tensor:
    """``_prepare_memory_conditioned_features`` for a batch of N: (HW, N, C) features -> (N, C, H, W)."""
    n, c = feats.shape[1], model.hidden_dim
    h, w = model.backbone_feature_sizes[-1]
    if is_init:  # the prompt frame: no memory yet, SAM 2's learnt "no memory" embedding instead
        return (feats + model.no_memory_embedding).permute(1, 2, 0).reshape(n, c, h, w)
    previous = model._gather_memory_frame_outputs(session, _OBJ, frame, False)
    memories, memory_pos = model._build_memory_attention_inputs(previous, feats.device)  # each (HW, N, 64)
    offsets, pointers, max_pointers = model._get_object_pointers(
        session, _OBJ, frame, session.num_frames, feats.device, False, False
    )
    n_pointer_tokens = 0
    if pointers:
        ptr, ptr_pos = model._process_object_pointers(offsets, pointers, max_pointers, n, c, feats.device)
        memories.append(ptr)  # (pointers * C / 64, N, 64)
        memory_pos.append(ptr_pos)
        n_pointer_tokens = ptr.shape[0]
    out = model.memory_attention(
        current_vision_features=feats,
        current_vision_position_embeddings=pos,
        memory=torch.cat(memories, dim=0).to(dtype=session.dtype),  # (M, N, 64)
        memory_posision_embeddings=torch.cat(memory_pos, dim=0),  # sic: HF's argument name
        num_object_pointer_tokens=n_pointer_tokens,
    )  # (1, N, HW, C)
    return out[0].transpose(1, 2).reshape(n, c, h, w)


def single_frame_forward(model: Any, multimask_output: bool, **kwargs: Any) -> Any:
    """``model._single_frame_forward(multimask_output=..., **kwargs)``, right for a batch above one.

    With one candidate, HF's own result. With three, HF's selection of the
    best candidate (highest predicted IoU) is redone per row from the mask
    decoder's outputs: the low- and high-resolution masks (gated by the object
    score as HF gates them) and the object pointer taken from that
    candidate's output token. Row by row this equals HF's call on a batch of one.
    """
    if not multimask_output:
        return model._single_frame_forward(multimask_output=False, **kwargs)
    from transformers.models.sam2_video.modeling_sam2_video import NO_OBJ_SCORE

    captured: list[Any] = []
    handle = model.mask_decoder.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        out = model._single_frame_forward(multimask_output=True, **kwargs)
    finally:
        handle.remove()
    masks, iou, tokens, score = captured[-1]  # (B, O, K, h, w), (B, O, K), (B, O, K, C), (B, O, 1)
    present = score > 0
    masks = torch.where(present[..., None, None], masks, NO_OBJ_SCORE)
    best = iou.argmax(-1)  # (B, O)
    rows, objs = torch.arange(masks.shape[0])[:, None], torch.arange(masks.shape[1])[None]
    low = masks[rows, objs, best]  # (B, O, h, w)
    size = (model.image_size, model.image_size)
    high = F.interpolate(low.float(), size=size, mode="bilinear", align_corners=False).to(low.dtype)
    pointer = model.object_pointer_proj(tokens[rows, objs, best])  # (B, O, C)
    weight = present.to(pointer.dtype)
    out.pred_masks, out.high_res_masks = low, high
    out.object_pointer = weight * pointer + (1 - weight) * model.no_object_pointer
    return out


def forward_frame(model: Any, session: Any, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the video model on ``frame`` for all N objects at once; the memory bank is updated.

    Returns the low-resolution mask logits (N, 1, h, w), gated by the object
    score as HF's are, and the object score logits (N, 1, 1). Runs with gradients
    unless called under ``torch.inference_mode``. Tracking is forward in time only.
    """
    points = session.point_inputs_per_obj[_OBJ].get(frame)
    is_init = points is not None and frame not in session.frames_tracked_per_obj[_OBJ]
    if points is not None:
        n = points["point_coords"].shape[0]
        session.obj_with_new_inputs.remove(1)
    else:
        n = session.output_dict_per_obj[_OBJ]["cond_frame_outputs"][0]["object_pointer"].shape[0]
    cached = session.cache.get_vision_features(frame)
    # each (HW, N, C): one clip's frame expanded to its N objects, or already per row (``new_session``)
    feats = [x.expand(-1, n, -1) for x in cached["vision_feats"]]
    pos = cached["vision_pos_embeds"][-1].expand(-1, n, -1)
    sizes = model.backbone_feature_sizes[:-1]
    high_res = [x.permute(1, 2, 0).reshape(n, x.shape[2], *s) for x, s in zip(feats[:-1], sizes, strict=True)]
    # (N, C_l, H_l, W_l) each
    pix_feat = _memory_conditioned(model, session, frame, is_init, feats[-1], pos)
    sam = single_frame_forward(
        model,
        pixel_values=None,
        input_points=points["point_coords"] if points is not None else None,
        input_labels=points["point_labels"] if points is not None else None,
        image_embeddings=[*high_res, pix_feat],
        multimask_output=model._use_multimask(is_init, points),
    )
    session.store_output(
        _OBJ,
        frame,
        output_value={
            "pred_masks": sam.pred_masks,
            "object_pointer": sam.object_pointer,  # (N, C)
            "high_res_masks": sam.high_res_masks,
            "object_score_logits": sam.object_score_logits,
        },
        is_conditioning_frame=is_init,
    )
    memory, memory_pos = model._encode_new_memory(
        current_vision_feats=feats[-1],
        pred_masks_high_res=sam.high_res_masks,
        object_score_logits=sam.object_score_logits,
        is_mask_from_pts=points is not None,
    )  # (HW, N, 64) each
    kind = "cond_frame_outputs" if is_init else "non_cond_frame_outputs"
    stored = session.output_dict_per_obj[_OBJ][kind][frame]
    stored["maskmem_features"] = memory
    stored["maskmem_pos_enc"] = memory_pos
    if not is_init:
        session.frames_tracked_per_obj[_OBJ][frame] = {"reverse": False}
    return sam.pred_masks, sam.object_score_logits
