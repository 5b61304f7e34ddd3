"""Importing the model layer must not pull in GPU-only packages (triton, fla): CPU installs lack them."""

from __future__ import annotations

import subprocess
import sys


def test_importing_every_kind_loads_no_triton_or_fla():
    code = (
        "import sys; import glassbox.nn; from glassbox.nn.attention import KINDS; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('triton', 'fla')), len(KINDS.names()))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = proc.stdout.split()
    assert out[0] == "[]"
    assert int(out[1]) >= 6  # softmax, linear, sliding, gla, deltanet, auto
