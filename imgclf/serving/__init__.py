"""The HTTP service and its deployment: reads a bundle with ONNX Runtime; imports neither torch nor ZenML."""
