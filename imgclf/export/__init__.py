"""Exports of a trained model (ONNX fp32 and the INT8 that wins here, TorchScript, OpenVINO IR), each checked."""
