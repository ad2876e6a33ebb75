"""Caddy as the front door: HTTPS with ACME certificates, driven through its admin API.

dockyard starts Caddy (or attaches to one already listening on the admin address) and
pushes the whole configuration, built from the route table, with ``POST /load``: never a
file rewritten and a reload. A route table change (a deployment switching instances, a
crashed instance leaving the rotation, a domain added) sets a flag; one pusher thread
coalesces a burst of changes and pushes the new configuration, typically within tens of
milliseconds, and skips a push that would change nothing.

What Caddy is told, per app (hosts ``APP.<apps domain>`` and its custom domains):
- HTTPS (``https_port``): ``reverse_proxy`` to the app. By default (``upstreams`` "router")
  the upstream is dockyard's built-in router, one per scheme on loopback, which picks the
  instance (round robin, a refused instance skipped, the pages of an app with nothing
  running), so a deployment, a scale or a crash changes nothing in Caddy: Debian's Caddy
  2.6 reloads by opening a new listening socket and closing the old one, which resets
  the connections queued on the old one. With "instances", Caddy proxies straight to the
  instances (round robin, passive health, retries on another) and is reloaded at every
  instance change. Certificates obtained on demand from ``acme_ca`` at the first
  handshake for a name, after Caddy asks dockyard (``ask_url``) whether an app has the
  name, so nobody can make it order certificates for names no app has. Domains with a
  certificate of their owner's are served with it (loaded from files, so the key never
  travels through the admin API).
- HTTP (``http_port``): the same, or a redirect to HTTPS for force-HTTPS apps. Caddy
  answers the ACME HTTP-01 challenges there, and TLS-ALPN-01 ones on the HTTPS port.
- Access logs: Caddy sends each request as JSON to a TCP socket of dockyard's, which
  writes it to the app's logs as a ``[router]`` line.

An app without a running instance gets a short page saying why, as with the built-in
router.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from dockyard.router.limits import Limits
from dockyard.router.proxy import Router
from dockyard.routetable import Backend, RouteSnapshot, RouteTable

log = logging.getLogger(__name__)

ACCESS_LOGGER = "dockyard"
# How long a burst of route changes is gathered into one push.
COALESCE_SECONDS = 0.02
START_TIMEOUT = 15.0
# How often the pusher looks whether the Caddy it started is still running.
WATCH_SECONDS = 1.0
_CHALLENGE_PATH = "/.well-known/acme-challenge/"

_PAGES = {
    "deploying": (503, "The app {app} is being deployed, try again in a moment."),
    "stopped": (503, "The app {app} is stopped."),
    "scaled-down": (
        503,
        "The app {app} is scaled to zero web instances: scale web up to serve it again.",
    ),
    "crashed": (502, "The app {app} is not answering: its process crashed."),
}

AccessLogWriter = Callable[[str, str], None]  # (app, line)


class CaddyError(RuntimeError):
    pass


@dataclass(frozen=True)
class CaddyOptions:
    admin: str  # host:port of the admin API
    binary: str
    apps_domain: str
    http_port: int
    https_port: int
    acme_ca: str
    acme_ca_root: str  # PEM file trusted for the CA's own HTTPS, or ""
    acme_email: str
    ask_url: str
    storage_dir: Path  # certificates, ACME account, Caddy's own log
    # "router": Caddy proxies every app to dockyard's built-in router (one per scheme, on
    # loopback), which picks the instance: deployments, scaling and crashes change nothing
    # in Caddy, so it is reloaded only when host names change. "instances": Caddy proxies
    # straight to the instances (round robin, passive health) and is reloaded at every
    # instance change. Caddy 2.6 (Debian's) reloads by opening a new listening socket
    # (SO_REUSEPORT) and closing the old one, which resets connections still queued on the
    # old one: measured here, about one request in twenty reloads under continuous load.
    upstreams: str = "router"
    acme_challenges: frozenset[str] = frozenset({"http-01", "tls-alpn-01"})


class CaddyRouter:
    """Same life cycle as the built-in ``Router``: ``start``, ``port``, ``close``."""

    def __init__(
        self,
        table: RouteTable,
        options: CaddyOptions,
        *,
        access_log: AccessLogWriter | None = None,
    ) -> None:
        self.table = table
        self.options = options
        self.port = options.http_port
        self.https_port = options.https_port
        self._access_log = access_log
        self._bind = "127.0.0.1"
        self._process: subprocess.Popen[bytes] | None = None
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._pusher: threading.Thread | None = None
        self._pushed = ""
        self._pushes = 0
        self._push_lock = threading.Lock()
        self._started = False
        # With upstreams "router": the built-in routers Caddy proxies to, one per scheme.
        self._inner_https: Router | None = None
        self._inner_http: Router | None = None
        self._logs: _AccessLogReceiver | None = None
        self._client = httpx.Client(base_url=f"http://{options.admin}", timeout=30)
        table.subscribe(self._dirty.set)

    @property
    def pushes(self) -> int:
        """How many configurations were loaded into Caddy (for tests and benchmarks)."""
        return self._pushes

    async def start(self, host: str, port: int) -> None:
        """Start or attach to Caddy and load the routes; ``port`` is the HTTP port (the
        HTTPS one is in the options)."""
        self._bind = host
        if port:
            self.port = port
        if self._access_log is not None:
            self._logs = _AccessLogReceiver(self._access_log, self.table, self.options.apps_domain)
            self._logs.start()
        if self.options.upstreams == "router":
            # Every connection comes from Caddy: no cap per client address here.
            uncapped = Limits(max_connections_per_client=0)
            self._inner_https = Router(
                self.table,
                apps_domain=self.options.apps_domain,
                limits=uncapped,
                behind_https_port=self.https_port,
            )
            self._inner_http = Router(
                self.table,
                apps_domain=self.options.apps_domain,
                limits=uncapped,
                behind_http_port=self.port,
            )
            await self._inner_https.start("127.0.0.1", 0)
            await self._inner_http.start("127.0.0.1", 0)
        await asyncio.to_thread(self._start_sync)

    def _start_sync(self) -> None:
        if not self._admin_answers():
            self._launch()
        self._stop.clear()
        self.push()
        self._started = True
        self._pusher = threading.Thread(
            target=self._push_changes, name="dockyard-caddy", daemon=True
        )
        self._pusher.start()

    async def close(self) -> None:
        await asyncio.to_thread(self._close_sync)
        for inner in (self._inner_https, self._inner_http):
            if inner is not None:
                await inner.close()
        self._inner_https = self._inner_http = None

    def _close_sync(self) -> None:
        self._started = False
        self._stop.set()
        self._dirty.set()
        if self._pusher is not None:
            self._pusher.join(timeout=10)
            self._pusher = None
        if self._process is not None:
            with contextlib.suppress(httpx.HTTPError):
                self._client.post("/stop")
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._logs is not None:
            self._logs.close()
            self._logs = None
        self._client.close()
        self._client = httpx.Client(base_url=f"http://{self.options.admin}", timeout=30)

    # -- Caddy's process ---------------------------------------------------------------------

    def _admin_answers(self) -> bool:
        try:
            return self._client.get("/config/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _launch(self) -> None:
        storage = self.options.storage_dir
        storage.mkdir(parents=True, exist_ok=True)
        os.chmod(storage, 0o700)
        first = storage / "bootstrap.json"
        # Only the admin API: the routes come through it once Caddy answers.
        first.write_text(json.dumps({"admin": self._admin_config()}))
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(storage),
            "XDG_DATA_HOME": str(storage / "data"),
            "XDG_CONFIG_HOME": str(storage / "config"),
        }
        with open(storage / "caddy.log", "ab") as output:
            try:
                self._process = subprocess.Popen(
                    [self.options.binary, "run", "--config", str(first)],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    cwd=storage,
                )
            except FileNotFoundError:
                raise CaddyError(
                    f"DOCKYARD_ROUTER=caddy needs the {self.options.binary!r} command: "
                    "install Debian's caddy package (apt-get install caddy)"
                ) from None
        deadline = time.monotonic() + START_TIMEOUT
        while not self._admin_answers():
            if self._process.poll() is not None:
                raise CaddyError(
                    f"caddy exited with status {self._process.returncode} at start; "
                    f"see {storage / 'caddy.log'}"
                )
            if time.monotonic() > deadline:
                raise CaddyError(f"caddy's admin API did not answer on {self.options.admin}")
            time.sleep(0.05)

    # -- configuration -------------------------------------------------------------------------

    def _push_changes(self) -> None:
        while not self._stop.is_set():
            changed = self._dirty.wait(WATCH_SECONDS)
            if self._stop.is_set():
                return
            if not changed and not self._caddy_died():
                continue
            time.sleep(COALESCE_SECONDS)
            self._dirty.clear()
            try:
                self.push()
            except Exception:
                log.exception("pushing the routes to caddy failed; retrying")
                self._dirty.set()
                self._stop.wait(0.5)

    def _caddy_died(self) -> bool:
        """Start the Caddy this router started again if it exited (it holds no state
        dockyard cannot push again: certificates are in its storage)."""
        if self._process is None or self._process.poll() is None:
            return False
        log.error("caddy exited with status %s; starting it again", self._process.returncode)
        with self._push_lock:
            self._pushed = ""  # the new process has no routes yet
        try:
            self._launch()
        except CaddyError:
            log.exception("caddy could not be started again")
        return True

    def push(self) -> None:
        """Load the configuration for the route table as it is now (if it changed)."""
        with self._push_lock:
            config = json.dumps(self.config(self.table.snapshot()), sort_keys=True)
            if config == self._pushed:
                return
            response = self._client.post(
                "/load", content=config, headers={"Content-Type": "application/json"}
            )
            if response.status_code != 200:
                raise CaddyError(f"caddy refused the configuration: {response.text[:500]}")
            self._pushed = config
            self._pushes += 1

    def push_now(self) -> None:
        """Push at once, in the calling thread: a domain change is served by Caddy before
        the API answers the request that made it (a visitor connecting right after the
        answer would otherwise meet the previous configuration). Never raises: the
        pusher thread retries what fails here."""
        if not self._started:
            return
        try:
            self.push()
        except Exception:
            log.exception("pushing the routes to caddy failed; the pusher retries")
            self._dirty.set()

    def _admin_config(self) -> dict[str, Any]:
        return {"listen": self.options.admin, "config": {"persist": False}}

    def config(self, snapshot: RouteSnapshot) -> dict[str, Any]:
        """Caddy's JSON configuration for ``snapshot``."""
        opts = self.options
        hosts_of: dict[str, list[str]] = {
            app: [f"{app}.{opts.apps_domain}"] for app in snapshot.routes
        }
        for host, app in sorted(snapshot.aliases.items()):
            hosts_of.setdefault(app, [f"{app}.{opts.apps_domain}"]).append(host)
        https_routes: list[dict[str, Any]] = []
        http_routes: list[dict[str, Any]] = []
        for app in sorted(hosts_of):
            backends, status = snapshot.routes.get(app, ((), "none"))
            match = [{"host": hosts_of[app]}]
            if self._inner_https is not None and self._inner_http is not None:
                # Through the built-in router: instances, their health and the pages are
                # its business, so nothing here changes when they do.
                serve_https = _serve(app, (_inner(self._inner_https),), "running")
                serve_http = _serve(app, (_inner(self._inner_http),), "running")
            else:
                serve_https = serve_http = _serve(app, backends, status)
            https_routes.append({"match": match, "handle": serve_https, "terminal": True})
            if app in snapshot.force_https:
                http_routes.append({"match": match, "handle": [self._to_https()], "terminal": True})
            else:
                http_routes.append({"match": match, "handle": serve_http, "terminal": True})
        fallback = {
            "handle": [_page(404, "No app is served at {http.request.host}.")],
            "terminal": True,
        }
        own = snapshot.own_certificates
        logs = {"default_logger_name": ACCESS_LOGGER} if self._logs is not None else None
        https_server: dict[str, Any] = {
            "listen": [f"{_listen_host(self._bind)}:{opts.https_port}"],
            "routes": [*https_routes, fallback],
            "tls_connection_policies": [{}],
            "protocols": ["h1", "h2"],
            "automatic_https": {"disable_redirects": True, "skip_certificates": sorted(own)},
        }
        http_server: dict[str, Any] = {
            "listen": [f"{_listen_host(self._bind)}:{self.port}"],
            "routes": [*http_routes, fallback],
            "protocols": ["h1", "h2"],
        }
        if logs:
            https_server["logs"] = logs
            http_server["logs"] = logs
        issuer: dict[str, Any] = {
            "module": "acme",
            "ca": opts.acme_ca,
            "challenges": {
                "http": {
                    "alternate_port": self.port,
                    "disabled": "http-01" not in opts.acme_challenges,
                },
                "tls-alpn": {
                    "alternate_port": opts.https_port,
                    "disabled": "tls-alpn-01" not in opts.acme_challenges,
                },
            },
        }
        if opts.acme_ca_root:
            issuer["trusted_roots_pem_files"] = [opts.acme_ca_root]
        if opts.acme_email:
            issuer["email"] = opts.acme_email
        tls: dict[str, Any] = {
            "automation": {
                "policies": [{"issuers": [issuer], "on_demand": True}],
                "on_demand": {"ask": opts.ask_url},
            }
        }
        if own:
            tls["certificates"] = {
                "load_files": [
                    {"certificate": cert, "key": key, "tags": ["dockyard-own"]}
                    for _host, (cert, key) in sorted(own.items())
                ]
            }
        config: dict[str, Any] = {
            "admin": self._admin_config(),
            "storage": {"module": "file_system", "root": str(opts.storage_dir / "data")},
            "apps": {
                "http": {
                    "http_port": self.port,
                    "https_port": opts.https_port,
                    # In-flight requests of a replaced configuration finish.
                    "grace_period": "10s",
                    "servers": {"https": https_server, "http": http_server},
                },
                "tls": tls,
                # Caddy's own local CA is never used here; by default Caddy would add
                # its root to the host's trust stores at start.
                "pki": {"certificate_authorities": {"local": {"install_trust": False}}},
            },
        }
        if self._logs is not None:
            config["logging"] = {
                "logs": {
                    "default": {"exclude": [f"http.log.access.{ACCESS_LOGGER}"]},
                    "access": {
                        "writer": {
                            "output": "net",
                            "address": f"tcp/127.0.0.1:{self._logs.port}",
                            "dial_timeout": "1s",
                        },
                        "encoder": {"format": "json"},
                        "include": [f"http.log.access.{ACCESS_LOGGER}"],
                    },
                }
            }
        return config

    def _to_https(self) -> dict[str, Any]:
        port = "" if self.options.https_port == 443 else f":{self.options.https_port}"
        return {
            "handler": "static_response",
            "status_code": 301,
            "headers": {"Location": [f"https://{{http.request.host}}{port}{{http.request.uri}}"]},
        }


def _listen_host(host: str) -> str:
    return "" if host in ("0.0.0.0", "") else host


def _serve(app: str, backends: tuple[Any, ...], status: str) -> list[dict[str, Any]]:
    if not backends:
        code, sentence = _PAGES.get(status, (404, "The app {app} is not running."))
        return [_page(code, sentence.format(app=app))]
    return [
        {
            "handler": "reverse_proxy",
            "upstreams": [{"dial": f"{b.host}:{b.port}"} for b in backends],
            "load_balancing": {
                "selection_policy": {"policy": "round_robin"},
                # A refused connection (an instance that just stopped) is tried again
                # on another instance instead of failing the request.
                "try_duration": "5s",
                "try_interval": "50ms",
            },
            "health_checks": {"passive": {"fail_duration": "5s", "max_fails": 1}},
        }
    ]


def _inner(router: Router) -> Backend:
    return Backend("127.0.0.1", router.port)


def _page(code: int, sentence: str) -> dict[str, Any]:
    headers = {"Content-Type": ["text/plain; charset=utf-8"], "Cache-Control": ["no-store"]}
    if code == 503:
        headers["Retry-After"] = ["5"]
    return {
        "handler": "static_response",
        "status_code": code,
        "headers": headers,
        "body": sentence + "\n",
    }


class _AccessLogReceiver:
    """Caddy's access log, one JSON object a line over TCP, into the apps' logs."""

    def __init__(self, write: AccessLogWriter, table: RouteTable, apps_domain: str) -> None:
        self._write = write
        self._table = table
        self._suffix = "." + apps_domain
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(
            target=self._accept, name="dockyard-caddy-logs", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for raw in lines:
                try:
                    self._record(json.loads(raw))
                except (ValueError, KeyError, TypeError):
                    log.warning("an access log line from caddy could not be read: %r", raw[:200])

    def _record(self, entry: dict[str, Any]) -> None:
        request = entry["request"]
        host = str(request.get("host", "")).lower()
        host = host.rpartition(":")[0] if host.count(":") == 1 else host
        app = self._table.app_for_host(host)
        if app is None and host.endswith(self._suffix):
            app = host[: -len(self._suffix)]
        if not app or "." in app or str(request.get("uri", "")).startswith(_CHALLENGE_PATH):
            return
        millis = float(entry.get("duration", 0)) * 1000
        line = (
            f'{request.get("remote_ip", "-")} "{request.get("method", "")} {request.get("uri", "")} '
            f'{request.get("proto", "")}" {entry.get("status", 0)} {entry.get("size", 0)} '
            f"host={host} duration={millis:.1f}ms tls={'yes' if request.get('tls') else 'no'}"
        )
        self._write(app, line)
