"""Towers (text/code on transformers; image on open_clip, later) and the dual encoder."""

from mmssl.models.dual import DualEncoder, DualEncoderConfig
from mmssl.models.text import TextTower, TowerConfig

__all__ = ["DualEncoder", "DualEncoderConfig", "TextTower", "TowerConfig"]
