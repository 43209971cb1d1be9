"""Query/gallery re-identification evaluation, NumPy in and out, one module per job.

  extract.py        a model over an evaluation dataset -> `SplitFeatures`
  features_file.py  `SplitFeatures` and the .npz features file (the one reader and writer)
  matching.py       distances: the `DISTANCES` registry (global, global + aligned local)
  reranking.py      k-reciprocal re-ranking
  metrics.py        multi-shot CMC, mAP, mINP (`evaluate_rank`), chance level
  protocols.py      dataset protocols: CUHK03-classic single-gallery-shot, MARS tracklet pooling
  report.py         metrics of every requested distance, and the printable table
  verification.py   pairs as same / different person: distance histograms, ROC, TPR at FPR
  alignment.py      one pair's stripe distances and shortest path (`tools.visualize_alignment`)
  figures.py        matplotlib figures saved as PNG, headless and atomically
"""
