"""Losses as pure tensor functions: [B] per-sample values, reduced explicitly by the caller."""
