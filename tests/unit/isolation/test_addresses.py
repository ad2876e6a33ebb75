"""Each app's namespace, interfaces and addresses: stable, distinct, inside the pool."""

from __future__ import annotations

import ipaddress

import pytest

from dockyard.isolation.addresses import NetworkPoolExhausted, allocate, capacity

POOL = ipaddress.IPv4Network("10.213.0.0/16")
FIRST = 200_000


def test_an_app_gets_the_same_names_and_addresses_every_time() -> None:
    first = allocate(uid=FIRST + 3, first_uid=FIRST, pool=POOL)
    assert first == allocate(uid=FIRST + 3, first_uid=FIRST, pool=POOL)
    assert first.netns == "dockyard-200003"
    assert str(first.netns_path) == "/run/netns/dockyard-200003"
    assert first.host_if == "dyapp200003"
    assert first.app_if == "eth0"
    assert str(first.network) == "10.213.0.12/30"
    assert (str(first.host_address), str(first.app_address)) == ("10.213.0.13", "10.213.0.14")


def test_no_two_apps_share_an_address_and_all_stay_in_the_pool() -> None:
    apps = [allocate(uid=FIRST + i, first_uid=FIRST, pool=POOL) for i in range(capacity(POOL))]
    assert capacity(POOL) == 16384
    networks = {app.network for app in apps}
    assert len(networks) == len(apps)
    assert all(app.network.subnet_of(POOL) for app in apps)
    assert all(app.host_address in app.network and app.app_address in app.network for app in apps)
    assert len({app.netns for app in apps} | {app.host_if for app in apps}) == 2 * len(apps)
    assert str(apps[-1].network) == "10.213.255.252/30"


def test_interface_names_fit_the_kernels_limit_for_any_uid() -> None:
    app = allocate(uid=2**32 - 2, first_uid=2**32 - 2, pool=POOL)
    assert len(app.host_if) <= 15


def test_an_app_beyond_the_pool_is_told_which_setting_to_grow() -> None:
    small = ipaddress.IPv4Network("10.213.0.0/24")
    assert allocate(uid=FIRST + 63, first_uid=FIRST, pool=small).app_address == (
        ipaddress.IPv4Address("10.213.0.254")
    )
    with pytest.raises(NetworkPoolExhausted, match="DOCKYARD_APP_NETWORK_POOL") as error:
        allocate(uid=FIRST + 64, first_uid=FIRST, pool=small)
    assert "holds 64 apps" in error.value.message


def test_a_uid_below_the_first_app_uid_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="below the first app uid"):
        allocate(uid=FIRST - 1, first_uid=FIRST, pool=POOL)
