"""Benchmarks for the hybrid's trade-offs: ``make bench`` runs them all in one go."""
