"""Test-wide settings: never touch the network, never log to W&B online."""

import os

# Set before any hub-aware library is imported: a hub miss must fail at once, not stall.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("MPLBACKEND", "Agg")
