"""Settings read from the environment, and the defaults derived from the machine."""

from __future__ import annotations

import os

import pytest

from dockyard import settings
from dockyard.settings import Settings, SettingsError

GIB = 1024**3


@pytest.mark.parametrize(
    ("cores", "memory_gib", "expected"),
    [
        (2, 24, 6),  # memory-bound: six builds of 4 GiB fit
        (2, 64, 8),  # core-bound: four per core
        (1, 2, 2),  # never fewer than two
        (32, 64, 16),
        (64, 1024, 32),  # at most 32, whatever the machine
    ],
)
def test_default_workers_follow_cores_and_memory(
    cores: int, memory_gib: int, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = 4096
    pages = memory_gib * GIB // page
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    monkeypatch.setattr(
        os, "sysconf", lambda name: {"SC_PHYS_PAGES": pages, "SC_PAGE_SIZE": page}[name]
    )
    assert settings.default_workers(4 * GIB) == expected
    assert Settings.from_mapping({}).workers == expected
    assert Settings.from_mapping({"DOCKYARD_WORKERS": "3"}).workers == 3


def test_a_bad_worker_count_is_refused_with_the_variable_named() -> None:
    with pytest.raises(SettingsError, match="DOCKYARD_WORKERS"):
        Settings.from_mapping({"DOCKYARD_WORKERS": "zero"})


def test_the_abuse_limits_are_settings_with_floors() -> None:
    limits = Settings.from_mapping(
        {
            "DOCKYARD_API_MAX_HEAD_BYTES": "8192",
            "DOCKYARD_API_MAX_HEADERS": "20",
            "DOCKYARD_API_HEADER_TIMEOUT": "3",
            "DOCKYARD_API_MAX_CONNECTIONS_PER_CLIENT": "8",
            "DOCKYARD_MAX_PENDING_SOURCES": "4",
            "DOCKYARD_MAX_PENDING_SOURCE_BYTES": "1000000",
            "DOCKYARD_MAX_BUILD_OUTPUT_BYTES": "100000",
        }
    )
    assert (limits.api_max_head_bytes, limits.api_max_headers) == (8192, 20)
    assert (limits.api_header_timeout, limits.api_max_connections_per_client) == (3, 8)
    assert (limits.max_pending_sources, limits.max_pending_source_bytes) == (4, 1000000)
    assert limits.max_build_output_bytes == 100000
    for name, value in [
        ("DOCKYARD_API_MAX_HEAD_BYTES", "100"),  # no request line would fit
        ("DOCKYARD_API_HEADER_TIMEOUT", "0"),
        ("DOCKYARD_API_MAX_CONNECTIONS_PER_CLIENT", "0"),
        ("DOCKYARD_MAX_BUILD_OUTPUT_BYTES", "10"),
    ]:
        with pytest.raises(SettingsError, match=name):
            Settings.from_mapping({name: value})
def test_blocked_networks_and_the_app_pool_are_read_as_ipv4_networks() -> None:
    values = Settings.from_mapping(
        {
            "DOCKYARD_BLOCKED_NETWORKS": "10.0.0.0/8, 192.168.0.0/16,",
            "DOCKYARD_APP_NETWORK_POOL": "172.30.0.0/20",
            "DOCKYARD_CONTAINER_NETWORK_POOL": "172.31.0.0/16",
        }
    )
    assert str(values.container_network_pool) == "172.31.0.0/16"
    assert [str(network) for network in values.blocked_networks] == ["10.0.0.0/8", "192.168.0.0/16"]
    assert str(values.app_network_pool) == "172.30.0.0/20"
    defaults = Settings.from_mapping({})
    assert defaults.blocked_networks == ()
    assert str(defaults.app_network_pool) == "10.213.0.0/16"
    assert str(defaults.container_network_pool) == "10.214.0.0/16"
    assert defaults.network_isolation is True


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"DOCKYARD_BLOCKED_NETWORKS": "10.0.0.1/8"}, "CIDR notation"),
        ({"DOCKYARD_BLOCKED_NETWORKS": "fd00::/8"}, "IPv4 networks only"),
        ({"DOCKYARD_BLOCKED_NETWORKS": "intranet"}, "DOCKYARD_BLOCKED_NETWORKS"),
        ({"DOCKYARD_APP_NETWORK_POOL": "8.8.0.0/16"}, "private IPv4 range"),
        ({"DOCKYARD_APP_NETWORK_POOL": "10.213.0.0/28"}, "a /24 or larger"),
        ({"DOCKYARD_NETWORK_ISOLATION": "maybe"}, "true or false"),
        ({"DOCKYARD_CONTAINER_NETWORK_POOL": "8.8.0.0/16"}, "private IPv4 range"),
        ({"DOCKYARD_CONTAINER_NETWORK_POOL": "10.214.0.0/25"}, "a /24 or larger"),
    ],
)
def test_bad_isolation_settings_are_refused_saying_what_to_change(
    env: dict[str, str], says: str
) -> None:
    with pytest.raises(SettingsError, match=says):
        Settings.from_mapping(env)


def test_the_internal_url_defaults_to_the_public_url() -> None:
    one = Settings.from_mapping({"DOCKYARD_PUBLIC_URL": "https://api.example.com/"})
    assert one.internal_url == one.own_url == "https://api.example.com"
    several = Settings.from_mapping(
        {
            "DOCKYARD_PUBLIC_URL": "https://api.example.com",
            "DOCKYARD_INTERNAL_URL": "http://10.0.0.7:8088/",
        }
    )
    assert several.own_url == "http://10.0.0.7:8088"
    assert several.public_url == "https://api.example.com"


@pytest.mark.parametrize("value", ["10.0.0.7:8088", "ftp://10.0.0.7", "http://10.0.0.7/?a=b"])
def test_an_internal_url_that_is_no_address_is_refused_saying_why(value: str) -> None:
    with pytest.raises(SettingsError, match="DOCKYARD_INTERNAL_URL must be this API process"):
        Settings.from_mapping({"DOCKYARD_INTERNAL_URL": value})


def test_one_offs_attach_by_default_on_the_host_clients_reach_the_api_by() -> None:
    """``scalingo run`` connects to the attach URL it is given: never a bind address."""
    behind = Settings.from_mapping(
        {"DOCKYARD_HOST": "0.0.0.0", "DOCKYARD_PUBLIC_URL": "https://paas.example.com"}
    )
    assert behind.attach_public_url == f"http://paas.example.com:{behind.attach_port}"
    local = Settings.from_mapping({})
    assert local.attach_public_url == f"http://127.0.0.1:{local.attach_port}"
    chosen = Settings.from_mapping({"DOCKYARD_ATTACH_PUBLIC_URL": "https://run.example.com/"})
    assert chosen.attach_public_url == "https://run.example.com"


def test_container_runtimes_keep_the_current_and_previous_release_by_default() -> None:
    """A release there is an image in the registry (issue 16: keep current + previous)."""
    assert Settings.from_mapping({}).releases_kept == 5
    for runtime in ("docker", "swarm"):
        assert Settings.from_mapping({"DOCKYARD_RUNTIME": runtime}).releases_kept == 2
        chosen = {"DOCKYARD_RUNTIME": runtime, "DOCKYARD_RELEASES_KEPT": "4"}
        assert Settings.from_mapping(chosen).releases_kept == 4


def test_the_https_port_is_read_under_either_name() -> None:
    assert Settings.from_mapping({"DOCKYARD_HTTPS_PORT": "8443"}).router_https_port == 8443
    both = {"DOCKYARD_HTTPS_PORT": "8443", "DOCKYARD_ROUTER_HTTPS_PORT": "9443"}
    assert Settings.from_mapping(both).router_https_port == 9443
    with pytest.raises(SettingsError, match="DOCKYARD_HTTPS_PORT must be a whole number"):
        Settings.from_mapping({"DOCKYARD_HTTPS_PORT": "https"})
