"""fsa: feature space analysis by guided diffusion (Shirahama et al., 2025)."""

import os
from pathlib import Path

__version__ = "0.1.0"

# Weights that ship with fsa (the embedded digits models), rebuilt by the scripts in scripts/.
ASSETS_DIR = Path(__file__).resolve().parent / "assets"
# The Hydra configs, package data: found in a source tree and in an installed wheel alike.
CONF_DIR = Path(__file__).resolve().parent / "conf"


def default_data_dir() -> Path:
    """Where downloaded data goes unless the config's `data_dir` says otherwise: $FSA_DATA_DIR, else
    ~/.cache/fsa. Never the working directory: the same run finds the same data wherever it starts."""
    return Path(os.environ.get("FSA_DATA_DIR") or Path.home() / ".cache" / "fsa").expanduser()
