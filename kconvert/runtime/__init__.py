"""Executing the IR: the numpy engine (and, later, onnxruntime sessions)."""
