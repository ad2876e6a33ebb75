"""The HTTP front door: maps ``APP.<apps domain>`` host names to running releases.

``RouteTable`` is what deployments update (from any thread); ``Router`` serves it.
"""

from dockyard.router.limits import Limits
from dockyard.router.proxy import Router
from dockyard.routetable import Backend, RouteTable

__all__ = ["Backend", "Limits", "RouteTable", "Router"]
