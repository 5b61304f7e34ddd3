"""Edge deployment: ONNX export, int8 quantization with an accuracy gate, latency, and a prediction server.

``export.py`` exports and validates, ``quantize.py`` makes int8 models,
``latency.py`` measures them beside PyTorch, ``serve.py`` serves them. All
of it needs the ``edge`` extra (onnx, onnxscript, onnxruntime, fastapi,
uvicorn), imported only when used.
"""
