"""Readers and writers: bytes <-> plain Python structures. They know nothing of what a layer computes."""
