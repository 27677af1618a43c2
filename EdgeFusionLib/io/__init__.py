"""Reading, checking, resampling and writing images; the paired-image folder layout."""
