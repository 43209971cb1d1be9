"""tf-reid: AlignedReID person re-identification in TensorFlow/Keras."""

import os

# TensorFlow's oneDNN CPU kernels (convolutions, fused batch norm) are on by default only on
# CPUs with AVX-512 VNNI/BF16 or AMX; on others, AVX2 ones among them, TensorFlow falls back to
# its own kernels and the training step ran several times slower (BUILD.md, "Train step vs
# PyTorch"). Importing tf_reid before tensorflow turns them on; TF_ENABLE_ONEDNN_OPTS=0 in the
# environment still turns them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
