"""Fusing images: rules, baselines, the method registry, the slice engine, intensity and colour."""
