"""Inference: the model file (one safe loader) and prediction on new recordings."""
