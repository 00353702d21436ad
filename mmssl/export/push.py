"""``mmssl push``: a model directory to the Hugging Face hub, checked first (``files_to_push``), then
uploaded by huggingface_hub (``create_repo`` + ``upload_folder``; users who are online).

What may be pushed: an mmssl model directory (``dual_encoder.json``) with its model card, or an
export (``mmssl export``: ONNX or sentence-transformers). Hidden files and temporaries are left out.
"""

from __future__ import annotations

import re
from pathlib import Path

from mmssl.export.onnx_encoder import CONFIG_NAME as ONNX_CONFIG
from mmssl.models.card import CARD_NAME

REPO_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MARKERS = ("dual_encoder.json", ONNX_CONFIG, "modules.json")  # mmssl model, ONNX export, sentence-transformers


def files_to_push(model: str | Path, repo: str) -> list[tuple[str, int]]:
    """(relative path, bytes) of every file that would be uploaded; a clear error if ``model`` is not
    a directory mmssl wrote, an mmssl model has no card, or ``repo`` is not namespace/name."""
    root = Path(model)
    if not REPO_RE.match(repo):
        raise ValueError(f"--repo {repo!r}: give the hub repository as namespace/name")
    if not root.is_dir():
        raise FileNotFoundError(f"--model {model}: no such directory")
    if not any((root / m).is_file() for m in MARKERS):
        raise ValueError(f"--model {model}: not an mmssl model or export (none of {', '.join(MARKERS)})")
    if (root / "dual_encoder.json").is_file() and not (root / CARD_NAME).is_file():
        raise ValueError(f"--model {model}: no {CARD_NAME} model card (mmssl train writes one); nothing uploaded")
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    keep = [
        p for p in files if not any(part.startswith(".") or part.endswith(".tmp") for part in p.relative_to(root).parts)
    ]
    return [(str(p.relative_to(root)), p.stat().st_size) for p in keep]


def push_folder(model: str | Path, repo: str, private: bool = False) -> str:
    """Create ``repo`` if needed and upload the checked files of ``model``; returns the repo's URL."""
    from huggingface_hub import HfApi

    files = files_to_push(model, repo)
    api = HfApi()
    url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(
        folder_path=str(model), repo_id=repo, repo_type="model", allow_patterns=[rel for rel, _ in files],
        commit_message=f"mmssl push of {Path(model).name}",
    )  # fmt: skip
    return str(url)
