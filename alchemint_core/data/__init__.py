"""Training data: the dataset format on disk (dataset), reference augmentation (augment) and the encoded cache that
training reads (cache)."""
