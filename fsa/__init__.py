"""fsa: feature space analysis by guided diffusion (Shirahama et al., 2025)."""

__version__ = "0.1.0"
