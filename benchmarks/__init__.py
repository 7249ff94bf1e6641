"""Benchmarks of attnkit, run from the repository root (`make bench`)."""
