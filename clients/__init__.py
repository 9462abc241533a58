"""Clients of the cluster that are not browsers: the command-line client in ``clients.cli``."""
