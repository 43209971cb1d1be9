"""The global feature that is evaluated and served, as plain constants (no TensorFlow import,
so that command lines can offer them as flags before loading anything).

name -> the `AlignedReID` output it is: "pre_bn" is the feature the metric losses train,
"post_bn" the BN-neck's output, which Bag of Tricks evaluates. The defaults (the feature, and
averaging each image's features with its mirror's) were chosen on the validation identities
(BUILD.md, `bench.feature_choice`); `tf_reid.evaluate`, the SavedModel and so `tools.embed` use
them, so that served embeddings equal evaluated ones.
"""

FEATURES = {"pre_bn": "global", "post_bn": "neck"}
DEFAULT_FEATURE = "pre_bn"
DEFAULT_FLIP = True
