"""Data: loaders (raw formats → RawDataset), samples, splits, vocabularies and encoded features."""
