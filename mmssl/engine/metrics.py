"""The run's record: ``OUT/metrics.jsonl`` (one JSON object per logged step and per validation) and
``OUT/curves.png`` (training loss and the validation metric against the step).

``MetricsLog``: rank 0 appends, other ranks write nothing; on resume the records past the
checkpoint are dropped first, so the file reads as one uninterrupted run. ``plot_curves`` draws it.
"""

from __future__ import annotations

import json
from pathlib import Path

from mmssl.console import get_logger
from mmssl.io import Closable, atomic_file

log = get_logger("train")


class MetricsLog(Closable):
    """Appends records to ``path`` (``enabled``: rank 0), one JSON object a line, flushed each time."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled, self._file = path, enabled, None

    def open(self, step: int) -> MetricsLog:
        """Start appending after dropping the records past ``step`` (0: a fresh run keeps none)."""
        if self.enabled:
            truncate_metrics(self.path, step)
            self._file = self.path.open("a")
        return self

    def write(self, record: dict) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop records past the checkpoint so the file reads as one uninterrupted run."""
    if not path.exists():
        return
    lines = path.read_text(errors="replace").splitlines()
    keep = []
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the last line, torn by a kill mid-write: it is past the checkpoint
                log.warning("%s:%d: dropping a torn last record", path, number)
                continue
            raise ValueError(f"{path}:{number}: not a JSON record; the run's log is damaged") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path}:{number}: a record without an integer 'step'; the run's log is damaged")
        if record["step"] <= step:
            keep.append(line)
    with atomic_file(path, "w") as f:
        f.write("".join(line + "\n" for line in keep))


def plot_curves(metrics_path: Path, png_path: Path, metric: str = "mrr", loss_title: str = "training loss") -> None:
    """Training loss (left) and the validation ``metric`` (right) against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    train = [r for r in rows if "loss" in r]
    valid = [r for r in rows if r.get("split") == "valid" and metric in r]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax1.plot([r["step"] for r in train], [r["loss"] for r in train])
    ax1.set(xlabel="step", ylabel="training loss", title=loss_title)
    if valid:
        ax2.plot([r["step"] for r in valid], [r[metric] for r in valid], marker="o")
    ax2.set(xlabel="step", ylabel=metric, title=f"validation {metric}")
    fig.tight_layout()
    with atomic_file(png_path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
