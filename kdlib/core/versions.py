"""Versions and hardware, recorded with every result for reproducibility."""

from __future__ import annotations

import os
import platform
from typing import Any

import torch
import transformers


def runtime_versions() -> dict[str, Any]:
    """Versions and hardware of this process: python, torch, transformers, platform, CPUs, CUDA device."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
