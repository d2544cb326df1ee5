"""Meaning: Keras configs <-> IR, weights onto layers."""
