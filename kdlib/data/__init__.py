"""Data: embedded assets, task definitions and readers, splits, tokenization, batching, augmentation."""
