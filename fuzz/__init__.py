"""Fuzzing harnesses, their oracles, and resource-bound measurements (see README.md)."""
