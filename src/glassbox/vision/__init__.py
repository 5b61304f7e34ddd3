"""Vision: promptable video object tracking with SAM 2 (Hugging Face transformers), on generated videos.

``video`` makes and loads videos, ``track`` prompts and propagates, ``train``
trains a small tracker from scratch, ``metrics`` scores J&F. transformers is
imported only inside functions, so importing this package stays light.
"""
