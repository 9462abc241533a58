"""The gateway: the single public entry that routes, verifies tokens per route and proxies upstream."""
