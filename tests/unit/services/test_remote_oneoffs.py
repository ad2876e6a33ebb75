"""One-off commands asked of an API process beside workers: each call crosses the bus as
JSON to the app's worker, whose answer comes back as what the API routes need; an app
no worker runs, a worker that does not answer and a one-off that cannot start are
refused in words."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from dockyard.backends.eventbus.base import Event
from dockyard.backends.eventbus.memory import MemoryEventBus
from dockyard.db.engine import make_engine, make_sessionmaker, migrate, transaction
from dockyard.db.models import RouteRow
from dockyard.errors import BootError, Conflict
from dockyard.routetable import Backend
from dockyard.runtime.base import Instance
from dockyard.services import remote, remote_oneoffs
from dockyard.services.clock import now
from dockyard.services.oneoffs import StartedOneOff
from dockyard.services.remote_oneoffs import RemoteOneOffs


class JsonBus(MemoryEventBus):
    """Events cross as PostgreSQL's NOTIFY carries them: JSON text."""

    def publish_many(self, channel: str, events: Sequence[Event]) -> None:
        super().publish_many(channel, json.loads(json.dumps(list(events))))


def one_off(label: str) -> Instance:
    return Instance(
        name=label,
        process_type="one-off",
        index=int(label.rsplit("-", 1)[1]),
        command="rake db:migrate",
        size="M",
        state="running",
        release_id="d-1",
        started_at=1_765_000_000.5,
        endpoint=None,
    )


class Worker:
    """A worker's one-offs, as ``LocalOneOffs`` answers for them."""

    def __init__(self) -> None:
        self.started: list[dict[str, object]] = []
        self.stopping: list[str] = []
        self.refuse: str | None = None

    def start(
        self,
        app: str,
        *,
        command: str,
        env: Mapping[str, str],
        size: str,
        detached: bool,
        operation_id: str,
    ) -> StartedOneOff:
        if self.refuse:
            raise BootError(self.refuse, timed_out=False)
        self.started.append(
            {
                "app": app,
                "command": command,
                "env": dict(env),
                "size": size,
                "detached": detached,
                "operation_id": operation_id,
            }
        )
        return StartedOneOff(one_off("one-off-1"), "http://w1.internal:8089/attach/" + "a" * 32)

    def running(self, app: str) -> list[Instance]:
        return [one_off("one-off-1"), one_off("one-off-2")]

    def stop_soon(self, app: str, label: str) -> bool:
        self.stopping.append(label)
        return label == "one-off-2"

    def of_operation(self, app: str, operation_id: str) -> StartedOneOff | None:
        return None if operation_id != "op-1" else StartedOneOff(one_off("one-off-1"), "")


def routed(tmp_path: Path, owners: dict[str, str]) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path / 'dockyard.db'}")
    migrate(engine)
    db = make_sessionmaker(engine)
    with transaction(db) as session:
        for app, owner in owners.items():
            session.add(
                RouteRow(app=app, owner=owner, backends=[], status="running", updated_at=now())
            )
    return db


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[RemoteOneOffs, Worker]:
    bus, worker = JsonBus(), Worker()
    db = routed(tmp_path, {"app-one": "w1", "orphan": "w-gone"})
    remote.answer_calls(
        bus=bus,
        owner="w1",
        processes=None,  # type: ignore[arg-type]  # no call here reaches the supervisor
        env_for=lambda app: {},
        take_over=lambda app: None,
        one_offs=partial(remote_oneoffs.answer, worker),
    )
    return RemoteOneOffs(remote.RemoteProcesses(db, bus, timeout=0.5)), worker


def test_a_run_reaches_the_apps_worker_and_answers_what_the_client_needs(
    cluster: tuple[RemoteOneOffs, Worker],
) -> None:
    api, worker = cluster
    started = api.start(
        "app-one",
        command="rake db:migrate",
        env={"TERM": "xterm", "EXTRA": "1"},
        size="L",
        detached=False,
        operation_id="op-1",
    )
    assert started == StartedOneOff(
        one_off("one-off-1"), "http://w1.internal:8089/attach/" + "a" * 32
    )
    # Only the request's variables travel; the worker adds the app's from the database.
    assert worker.started == [
        {
            "app": "app-one",
            "command": "rake db:migrate",
            "env": {"TERM": "xterm", "EXTRA": "1"},
            "size": "L",
            "detached": False,
            "operation_id": "op-1",
        }
    ]
    assert api.running("app-one") == [one_off("one-off-1"), one_off("one-off-2")]
    assert api.of_operation("app-one", "op-1") == StartedOneOff(one_off("one-off-1"), "")
    assert api.of_operation("app-one", "op-other") is None
    assert api.stop_soon("app-one", "one-off-2") is True
    assert api.stop_soon("app-one", "one-off-9") is False
    assert worker.stopping == ["one-off-2", "one-off-9"]


def test_an_instance_with_an_endpoint_survives_the_trip() -> None:
    web = Instance(
        "web-1", "web", 1, "serve", "M", "running", "d-1", None, Backend("10.0.0.2", 41000)
    )
    assert remote.decode_instance(json.loads(json.dumps(remote.encode_instance(web)))) == web


def test_refusals_say_why(cluster: tuple[RemoteOneOffs, Worker]) -> None:
    api, worker = cluster
    run = partial(api.start, command="id", env={}, size="M", detached=True, operation_id="op-2")
    with pytest.raises(Conflict, match="never been deployed: deploy it before running a command"):
        run("never-deployed")
    # Nothing runs, so nothing is listed and there is nothing to stop.
    assert api.running("never-deployed") == []
    assert api.stop_soon("never-deployed", "one-off-1") is False
    with pytest.raises(
        Conflict, match=re.escape("'w-gone' that runs orphan did not answer within 0.5 s")
    ):
        run("orphan")
    worker.refuse = "The release's image is gone: deploy again."
    with pytest.raises(Conflict, match=re.escape(worker.refuse)):
        run("app-one")
