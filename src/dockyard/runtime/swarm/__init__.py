"""The swarm runtime: each process type of an app a Docker Swarm service (``apps``), made
of the release's image in the registry (``specs``), read back as instances and endpoints
(``tasks``), its output copied into the app's logs (``logs``)."""
