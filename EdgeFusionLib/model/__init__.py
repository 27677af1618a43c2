"""The EH-DRAN network, its folded inference form and its bundled weights."""
