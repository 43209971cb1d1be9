"""Export for TensorFlow Serving: SavedModel signatures, warm-up requests, serving clients."""
