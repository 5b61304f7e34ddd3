"""Efficient attention kinds, one module each, registered into ``glassbox.nn.attention.KINDS``.

Each ``<kind>.py`` holds the fast forms (chunkwise for training, recurrent
for decoding) and ``<kind>_naive.py`` its naive twin, after the layout of
flash-linear-attention's ``ops/<op>/{chunk, fused_recurrent, naive}.py``.
Importing this package imports every kind module, so adding a file is
adding a kind.
"""

from __future__ import annotations

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.endswith("_naive") and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
