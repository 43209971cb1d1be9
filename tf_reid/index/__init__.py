"""Gallery search that scales past a million crops: faiss indexes of L2-normalised embeddings.

`kinds.KINDS` is the registry of index kinds ("exact", "hnsw", "ivf", "ivfpq"); `gallery`
builds, searches, saves and loads an index with per-item metadata; `exact` is the blocked NumPy
baseline and the recall measure; `inputs` reads embeddings from a features file.
"""
