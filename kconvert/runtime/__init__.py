"""Executing the IR: the numpy engine and onnxruntime sessions (provider choice, caching, batching)."""

from .onnx_session import OnnxSession, SessionCache, resolve_providers

__all__ = ["OnnxSession", "SessionCache", "resolve_providers"]
