"""Ranking metrics for query/gallery re-identification: CMC, mAP and mINP, NumPy in and out."""
