"""fourm_lightning: 4M / 4M-21 massively multimodal masked modeling with PyTorch Lightning."""

__version__ = "0.1.0"
