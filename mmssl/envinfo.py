"""What this machine offers the project (versions, devices, precisions, FAISS GPUs): ``collect``
(``mmssl env`` prints it)."""

from __future__ import annotations

import os
import platform
from importlib import metadata

import torch

from mmssl.runtime import PRECISIONS, check_precision, resolve_device


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def collect(config) -> dict:
    device = resolve_device(config.device)
    precisions = []
    for p in PRECISIONS:
        try:
            check_precision(p, device)
            precisions.append(p)
        except ValueError:
            pass
    try:
        import faiss

        faiss_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        faiss_version = faiss.__version__
    except ImportError:
        faiss_gpus, faiss_version = 0, None
    return {
        "mmssl": _version("mmssl"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "mps_available": torch.backends.mps.is_available(),
        "device": str(device),
        "precisions": precisions,
        "faiss": faiss_version,
        "faiss_gpus": faiss_gpus,
        **{
            name: _version(dist)
            for name, dist in [
                ("transformers", "transformers"),
                ("open_clip", "open_clip_torch"),
                ("datasets", "datasets"),
                ("gradio", "gradio"),
            ]
        },
    }
