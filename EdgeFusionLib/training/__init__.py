"""Stage-1 training of EH-DRAN (autoencoder reconstruction) and its loss terms."""
