"""Data: listing a split's images and labels, the embedded datasets, the bad-data audit, converters, tiling, sizes."""
