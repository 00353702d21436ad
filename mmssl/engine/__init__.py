"""The one training engine: ``Task`` (the contract a task implements), ``Trainer`` (the loop,
checkpoints and exact resume), ``EngineConfig`` (what the loop reads) and ``run_training`` (a
training command's body). Sampling and seeds are in ``sampling``, AdamW's parameter groups in
``optimizer``, the run's record in ``metrics``."""

from mmssl.engine.config import EngineConfig
from mmssl.engine.run import run_training
from mmssl.engine.task import Task, TrainingData, Unsupported
from mmssl.engine.trainer import Trainer

__all__ = ["EngineConfig", "Task", "Trainer", "TrainingData", "Unsupported", "run_training"]
