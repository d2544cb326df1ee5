"""Installed package versions, for the header of every benchmark's results file."""

from __future__ import annotations

from importlib import metadata


def version(package: str) -> str:
    """The installed version of `package`, or "absent"."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def onnxruntime_package() -> str:
    """Which onnxruntime distribution is installed (the CPU or the GPU one)."""
    return next((p for p in ("onnxruntime", "onnxruntime-gpu") if version(p) != "absent"), "onnxruntime")
