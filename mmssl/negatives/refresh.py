"""Hard negatives during training: the table a run trains with, and its refresh (ANCE).

Training (``--negatives FILE``, ``--hard-negatives h``): every batch draws h of each pair's kept
negatives at random (under the batch's seed, ``NegativeTable.sample``) and embeds them with the
batch's candidates; they become extra a->b columns of the InfoNCE logits
(``InfoNCELoss(negatives=...)``). ANCE refresh (``--refresh-negatives N``): every N steps a copy of
the current model re-mines in a background thread while training goes on; the new lists are used
from N/2 steps later (training waits there if mining is not done), so a run is the same however
fast the mining was.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from dataclasses import asdict

import torch

from mmssl.console import get_logger
from mmssl.data.pairs import Pairs
from mmssl.negatives.mine import mine_negatives
from mmssl.negatives.table import MiningSettings, NegativeTable

log = get_logger("negatives")


class NegativeRefresher:
    """Re-mines every ``every`` steps with a snapshot of the model; the result is installed at step
    start + ``lag`` (the module docstring). ``asynchronous``: mining runs in a background
    thread meanwhile (on a GPU, on its own CUDA stream); otherwise at the start step itself (lag 0).

    Refreshes that would be installed at or after ``max_steps`` (never used) are not started."""

    def __init__(
        self, pairs: Pairs, settings: MiningSettings, every: int, max_steps: int, asynchronous: bool = True,
        batch_size: int = 256,
    ) -> None:  # fmt: skip
        if every < 1:
            raise ValueError(f"refresh every {every} steps: need >= 1")
        self.pairs, self.settings, self.every, self.max_steps = pairs, settings, every, max_steps
        self.asynchronous, self.batch_size = asynchronous, batch_size
        self.lag = max(1, every // 2) if asynchronous else 0
        self._thread: threading.Thread | None = None
        self._result: dict = {}
        self.pending_start: int | None = None
        self.waited_s = 0.0  # total time training waited for mining
        self.refreshes = 0

    def _mine(self, snapshot) -> None:
        try:
            stream = torch.cuda.Stream(snapshot.device) if snapshot.device.type == "cuda" else None
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                self._result["table"] = mine_negatives(self.pairs, self.settings, snapshot, self.batch_size)
            if stream is not None:
                stream.synchronize()
        except BaseException as e:  # re-raised in the training thread by _join
            self._result["error"] = e

    def after_step(self, step: int, model) -> NegativeTable | None:
        """Start a refresh at multiples of ``every``; return the new table at its install step."""
        if self.pending_start is None and step % self.every == 0 and step + self.lag < self.max_steps:
            self.pending_start = step
            self._result = {}
            snapshot = copy.deepcopy(model).eval()
            if self.asynchronous:
                self._thread = threading.Thread(
                    target=self._mine, args=(snapshot,), name="mmssl-negatives", daemon=True
                )
                self._thread.start()
            else:
                self._mine(snapshot)
        if self.pending_start is not None and step >= self.pending_start + self.lag:
            return self._join()
        return None

    def _finish(self) -> NegativeTable:
        """The pending refresh's table, waiting for its thread (the wait is counted)."""
        if self._thread is not None:
            t0 = time.monotonic()
            self._thread.join()
            self.waited_s += time.monotonic() - t0
            self._thread = None
        if "error" in self._result:
            raise RuntimeError("refreshing the hard negatives failed") from self._result["error"]
        return self._result["table"]

    def _join(self) -> NegativeTable:
        table = self._finish()
        self._result, self.pending_start = {}, None
        self.refreshes += 1
        return table

    # checkpoints: a refresh in flight is finished first, so that a resumed run installs the same table
    def state(self) -> dict:
        if self.pending_start is None:
            return {"pending_start": None}
        return {"pending_start": self.pending_start, "pending": self._finish().state()}

    def load_state(self, state: dict) -> None:
        self.pending_start = state["pending_start"]
        self._thread = None
        self._result = {"table": NegativeTable.from_state(state["pending"])} if self.pending_start is not None else {}

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def negatives_for(config, train: Pairs, max_steps: int) -> dict:
    """``ContrastiveTask`` keyword arguments for the hard-negative options ``config`` (an object with
    ``negatives``, ``hard_negatives``, ``refresh_negatives``, ``refresh_async``, ``refresh_source``,
    as ``mmssl train`` takes them) of a run of ``max_steps`` steps: the mined table (``--negatives``,
    checked against the training pairs) and the refresher (``--refresh-negatives``, with the file's
    mining settings when there is one)."""
    if config.hard_negatives < 0:
        raise ValueError(f"--hard-negatives must be >= 0; got {config.hard_negatives}")
    table = None
    if config.negatives:
        table = NegativeTable.load(config.negatives)
        table.check_for(train, config.negatives)
    refresher = None
    if config.refresh_negatives:
        base = table.settings if table is not None else MiningSettings()
        settings = MiningSettings.from_dict({**asdict(base), "source": config.refresh_source})
        refresher = NegativeRefresher(train, settings, config.refresh_negatives, max_steps, config.refresh_async)
    if (table is not None or refresher is not None) and config.hard_negatives == 0:
        log.warning("--hard-negatives 0: the mined negatives are not used")
    if table is not None:
        c = table.counts
        log.info(
            "hard negatives from %s: %.1f per pair (%d pairs without any), %d per pair per step",
            config.negatives, c.mean(), int((c == 0).sum()), config.hard_negatives,
        )  # fmt: skip
    return {"negatives": table, "hard_negatives": config.hard_negatives, "refresher": refresher}
