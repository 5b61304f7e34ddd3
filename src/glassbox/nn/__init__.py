"""The model layer: attention kinds, tokenizers, blocks and the Transformer.

>>> from glassbox.nn import KINDS
>>> "softmax" in KINDS
True
"""

from __future__ import annotations

from glassbox.nn.attention import KINDS, attention
from glassbox.nn.models import Transformer, build_model, load_model, model_from_spec, save_model

__all__ = ["KINDS", "Transformer", "attention", "build_model", "load_model", "model_from_spec", "save_model"]
