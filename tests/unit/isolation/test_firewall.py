"""The host's rules for app namespaces, as generated (nft checks them when it is installed)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess

import pytest

from dockyard.isolation import firewall

POOL = ipaddress.IPv4Network("10.213.0.0/16")


def config(**changes: object) -> firewall.FirewallConfig:
    values: dict[str, object] = {
        "pool": POOL,
        "blocked": (ipaddress.IPv4Network("10.0.0.0/8"), ipaddress.IPv4Network("10.9.0.0/16")),
        "resolvers": (ipaddress.IPv4Address("10.255.255.53"),),
        "router_ports": (8080,),
    }
    values.update(changes)
    return firewall.FirewallConfig(**values)  # type: ignore[arg-type]


def chain(rules: str, name: str) -> list[str]:
    lines = [line.strip() for line in rules.split(f"chain {name} {{", 1)[1].splitlines()]
    return [line for line in lines[: lines.index("}")] if line]


def test_the_table_is_replaced_whole_in_one_transaction() -> None:
    rules = firewall.ruleset(config())
    assert rules.startswith(
        "table inet dockyard {}\ndelete table inet dockyard\ntable inet dockyard {"
    )


def test_apps_may_reach_only_replies_dns_and_the_router_on_the_host() -> None:
    assert chain(firewall.ruleset(config()), "input") == [
        "type filter hook input priority filter - 10; policy accept;",
        'iifname "dyapp*" ct state established,related accept',
        'iifname "dyapp*" ip daddr @resolvers meta l4proto { tcp, udp } th dport 53 accept',
        'iifname "dyapp*" tcp dport { 8080 } accept',
        'iifname "dyapp*" reject with icmpx type admin-prohibited',
    ]


def test_forwarding_refuses_other_apps_docker_link_local_and_blocked_ranges() -> None:
    forward = chain(firewall.ruleset(config()), "forward")
    refuse = "reject with icmpx type admin-prohibited"
    assert forward[1:3] == [
        'oifname "dyapp*" ct state established,related accept',
        f'oifname "dyapp*" {refuse}',  # nothing but replies into an app: the router is local
    ]
    dns = forward.index(
        'iifname "dyapp*" ip daddr @resolvers meta l4proto { tcp, udp } th dport 53 accept'
    )
    blocked = forward.index(f'iifname "dyapp*" ip daddr @blocked {refuse}')
    docker = forward.index(f'iifname "dyapp*" oifname {{ "docker*", "br-*" }} {refuse}')
    ipv6 = forward.index('iifname "dyapp*" meta nfproto ipv6 drop')
    assert dns < blocked  # the host's resolver answers even inside a blocked range
    assert max(blocked, docker, ipv6) < len(forward) - 1
    assert forward[-1] == 'iifname "dyapp*" accept'


def test_blocked_ranges_always_hold_link_local_and_are_merged() -> None:
    rules = firewall.ruleset(config())
    assert "elements = { 10.0.0.0/8, 169.254.0.0/16 }" in rules
    assert "elements = { 169.254.0.0/16 }" in firewall.ruleset(config(blocked=()))


def test_egress_is_masqueraded_from_the_pool_only() -> None:
    assert chain(firewall.ruleset(config()), "postrouting")[1:] == [
        'ip saddr 10.213.0.0/16 oifname != "dyapp*" masquerade'
    ]


def test_without_resolvers_or_router_port_the_rules_have_no_holes_for_them() -> None:
    rules = firewall.ruleset(config(resolvers=(), router_ports=()))
    assert "th dport 53" not in rules
    assert "tcp dport" not in rules
    assert "set resolvers {\n    type ipv4_addr;\n  }" in rules


@pytest.mark.skipif(shutil.which("nft") is None or os.geteuid() != 0, reason="needs nft as root")
@pytest.mark.parametrize(
    "variant", [{}, {"resolvers": (), "router_ports": (), "blocked": ()}], ids=["full", "bare"]
)
def test_nft_accepts_the_rules(variant: dict[str, object]) -> None:
    checked = subprocess.run(
        ["nft", "-c", "-f", "-"],
        input=firewall.ruleset(config(**variant)),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_docker_user_rules_accept_apps_traffic_and_its_replies() -> None:
    assert firewall.docker_user_rules() == [
        ["-i", "dyapp+", "-m", "comment", "--comment", "dockyard: app namespaces", "-j", "ACCEPT"],
        [
            "-o", "dyapp+", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
            "-m", "comment", "--comment", "dockyard: app namespaces", "-j", "ACCEPT",
        ],
    ]  # fmt: skip


def test_resolvers_on_loopback_are_set_apart() -> None:
    text = """# generated
search example.com
nameserver 127.0.0.53
nameserver 10.255.255.53
nameserver 10.255.255.53
nameserver fd00::53
nameserver ::1
options edns0
"""
    reachable, loopback = firewall.host_resolvers(text)
    assert reachable == [ipaddress.IPv4Address("10.255.255.53")]
    assert loopback == ["127.0.0.53", "::1"]
