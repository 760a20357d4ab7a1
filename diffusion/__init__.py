"""Masked text diffusion on names. `from diffusion import sample` for the sampler (templates, variants)."""
from .sampler import edit_template, sample  # noqa: F401
