"""Addons: a PostgreSQL or Redis server of one app's own, run by dockyard (local runtime).

``base`` is what the services see (``AddonServers``); ``recipes`` says how each provider's
server is initialised, run, dumped and restored; ``local`` runs them sandboxed in their
app's network namespace and keeps them running.
"""
