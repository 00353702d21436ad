"""mmssl: multimodal contrastive retrieval."""

__version__ = "0.1.0"
