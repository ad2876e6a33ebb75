"""dockyard: a self-hostable PaaS that speaks Scalingo's deploy-from-archive API."""

__version__ = "0.1.0"
