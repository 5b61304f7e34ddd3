"""Self-supervised pretraining (contrastive, VICReg, masked modeling) and few-shot evaluation."""

from glassbox.ssl import contrastive, masked  # noqa: F401  (register the methods)
from glassbox.ssl.base import METHODS, embed
from glassbox.ssl.pretrain import pretrain

__all__ = ["METHODS", "embed", "pretrain"]
