"""The web dashboard: server-rendered pages over the same services, and the same
authorization, as the API (``dockyard.api``); a little plain JavaScript from /static."""
