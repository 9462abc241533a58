"""The orders service: a resource API that verifies access tokens and keeps its orders in SQLite."""
