"""Input pipelines: PK-sampled training batches and ordered evaluation input from TFRecords."""
