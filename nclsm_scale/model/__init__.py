"""Fibre segmentation network: architecture, weights, training and tiled inference."""
