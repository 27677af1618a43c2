"""Fusion quality metrics and the ``edgefusion evaluate`` report."""
