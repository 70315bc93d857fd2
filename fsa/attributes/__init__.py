"""Attributes of images as numbers, and how much of each a feature space keeps (retention)."""
