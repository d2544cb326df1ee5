"""Fuzzing suite: every reader gets corrupted and hostile files; only kconvert.errors may escape."""
