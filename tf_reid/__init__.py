"""tf-reid: AlignedReID person re-identification in TensorFlow/Keras."""
