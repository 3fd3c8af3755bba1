"""fastcert: certified robust training with short warmup (Shi et al., NeurIPS 2021)."""

__version__ = "0.1.0"
