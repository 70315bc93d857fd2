"""fsa: feature space analysis by guided diffusion (Shirahama et al., 2025)."""

from pathlib import Path

__version__ = "0.1.0"

# Weights that ship with fsa (the embedded digits models), rebuilt by the scripts in scripts/.
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
