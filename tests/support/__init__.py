"""What every test tier shares, in one place; ``plugin`` registers the fixtures for the whole suite.

``polling`` waits for asynchronous outcomes, ``claims`` builds claim sets, ``http`` reads the
gateway's answers, ``servers`` runs an app in a thread, ``hashing`` is the cheap argon2 cost of
test accounts, and ``cluster`` drives the whole cluster as a browser would. Import helpers from
those modules; fixtures come from the plugin by name.
"""
