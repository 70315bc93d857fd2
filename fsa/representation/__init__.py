"""The diffusion model's own representation (Kadkhodaie et al.): options and measures of `task=represent`."""
