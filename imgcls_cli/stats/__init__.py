"""Data-set and model statistics (class counts, embeddings, feature-space plots)."""
