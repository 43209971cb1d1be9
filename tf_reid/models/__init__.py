"""Backbones and the weights they start from, and the AlignedReID model built on them."""
