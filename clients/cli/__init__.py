"""A native command-line client: logs in without a browser and keeps a rotating refresh handle.

``python -m clients.cli --help`` lists the commands; docs/native-clients.md walks through them.
"""
