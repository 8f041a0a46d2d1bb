"""Synthetic data: the virtual camera and the sample-part generator (see datagen.flange)."""
