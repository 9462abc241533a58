"""Runnable examples of services built on the shared package's public API alone."""
