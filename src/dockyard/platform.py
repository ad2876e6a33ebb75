"""``Platform``: every dependency of the services, handlers and workers, as typed fields.

Built in one place only, ``dockyard.bootstrap``; this module holds the type so that the
modules that use it need not import the composition root (which imports them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dockyard.addons.base import AddonServers
from dockyard.api.listing_keys import ListingKeys
from dockyard.api.pagecache import PageCache
from dockyard.api.ratelimit import RateLimiter
from dockyard.api.streams import OpenStreams
from dockyard.backends.blobstore.base import BlobStore
from dockyard.backends.eventbus.base import EventBus
from dockyard.isolation.apps import AppIsolation
from dockyard.pipeline.executor import StepExecutor
from dockyard.routetable import RouteTable
from dockyard.runtime.base import AppProcesses, AppRuntime, ReleaseArtifacts
from dockyard.runtime.oneoff import OneOffs
from dockyard.services.auth import UserCache
from dockyard.services.logaccess import LogTokens
from dockyard.services.oneoffs import OneOffRunner
from dockyard.settings import Settings
from dockyard.signals import Signal


@dataclass
class Platform:
    """What services, handlers and workers use: backends, and the caches that front them."""

    settings: Settings
    engine: Engine
    db: sessionmaker[Session]
    blobs: BlobStore
    bus: EventBus
    jwt_key: bytes
    rate_limiter: RateLimiter
    user_cache: UserCache
    # The app name -> id and deployments version of each listing, and rendered pages.
    listing_keys: ListingKeys
    deployment_pages: PageCache
    # The API's open deployment streams, closed last at shutdown.
    streams: OpenStreams
    # Raised after a deployment is committed, so an idle worker looks at once.
    deployment_queued: Signal
    # The apps' route table (host name -> endpoints), written by the runtime's supervisor.
    routes: RouteTable
    # The capabilities that the logs URLs carry (services/logaccess.py).
    log_tokens: LogTokens
    # What runs the apps (the runtime's supervisor, or Swarm's services), or None in a
    # process that runs no apps (the admin commands, a control-plane-only test server).
    supervisor: AppRuntime | None = field(default=None)
    # Each app's network namespace and cgroups (local runtime), or None when apps are not
    # isolated (no root, sandbox off, or turned off in settings: the server says so).
    isolation: AppIsolation | None = field(default=None)
    # One-off commands (``run``), where apps run (served by this process's attach server).
    one_offs: OneOffs | None = field(default=None)
    # Where the API starts, lists and stops one-offs: ``one_offs`` itself, or, in an API
    # process beside workers, the app's worker through the bus (services/oneoffs.py).
    one_off_runner: OneOffRunner | None = field(default=None)
    # What the runtime needs made of a release at the ``pushing`` step (the docker
    # runtime's images in the registry); None when it runs the release directory itself.
    artifacts: ReleaseArtifacts | None = field(default=None)
    # How build steps run (bubblewrap, or containers of the stack under the docker
    # runtime); None: as ``DOCKYARD_SANDBOX`` says, in bubblewrap or not sandboxed.
    build_executor: StepExecutor | None = field(default=None)
    # The apps' addon servers (PostgreSQL, Redis), where apps run on the local runtime.
    addons: AddonServers | None = field(default=None)
    # A worker process shares no disk with the API processes: it downloads an uploaded
    # source through its capability URL instead of reading the blob store, and fetches
    # and sends the apps' build caches through the API (worker/cache_transfer.py).
    fetch_sources_from_api: bool = field(default=False)
    # In an API process beside worker processes: the apps' processes, asked through the
    # bus of the worker that runs each (services/remote.py).
    remote_processes: AppProcesses | None = field(default=None)

    @property
    def processes(self) -> AppProcesses | None:
        """Whoever runs the apps' processes for this process: its own supervisor, the
        workers (an API process), or nobody."""
        return self.supervisor if self.supervisor is not None else self.remote_processes
