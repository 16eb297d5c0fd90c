"""Data sets, albumentations pipelines, samplers, device-side normalisation and mixing."""
