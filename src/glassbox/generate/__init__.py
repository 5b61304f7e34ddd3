"""Generation from glassbox language models: speculative decoding and speculative cascades."""
