"""The addon catalogue, the URLs it hands apps, and what a scalingo.json declares."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from dockyard.domain import addons as catalogue


def test_scalingo_sample_plan_names_exist_with_growing_limits() -> None:
    for provider_id, names in {
        "postgresql": ["postgresql-sandbox", "postgresql-starter-512", "postgresql-starter-1024"],
        "redis": ["redis-sandbox", "redis-starter-128", "redis-starter-256"],
    }.items():
        provider = catalogue.PROVIDERS[provider_id]
        plans = [provider.plan(name) for name in names]
        assert all(plans), names
        memories = [plan.memory_mb for plan in provider.plans]
        assert memories == sorted(memories)
        assert [plan.position for plan in provider.plans] == list(range(1, len(memories) + 1))
    assert catalogue.PROVIDERS["postgresql"].plan("postgresql-starter-512").memory_mb == 512  # type: ignore[union-attr]


@pytest.mark.parametrize("alias", ["postgresql", "PostgreSQL", "postgres", "psql", " pg "])
def test_provider_aliases(alias: str) -> None:
    assert catalogue.provider(alias) is catalogue.PROVIDERS["postgresql"]


def test_urls_carry_scalingo_schemes_and_the_password() -> None:
    pg = catalogue.url(
        catalogue.PROVIDERS["postgresql"], user="shop_1", password="p4ss", host="127.0.0.1",
        port=5432, database="shop_1",
    )  # fmt: skip
    assert pg == "postgres://shop_1:p4ss@127.0.0.1:5432/shop_1"
    redis = urlsplit(
        catalogue.url(
            catalogue.PROVIDERS["redis"],
            user="shop_1",
            password="p4ss",
            host="127.0.0.1",
            port=6379,
            database="",
        )
    )
    assert (redis.scheme, redis.password, redis.port) == ("redis", "p4ss", 6379)


def test_resource_ids_are_sql_identifiers_that_need_no_quoting() -> None:
    for app in ("shop-app", "9lives-app", "a" * 48, "Über-app"):
        name = catalogue.resource_id(app, catalogue.new_addon_id())
        assert len(name) <= 63
        assert name[0].isalpha() and all(c.isalnum() or c == "_" for c in name)
        assert name.isascii()


def test_passwords_are_long_and_url_safe() -> None:
    password = catalogue.new_password()
    assert len(password) >= 32 and password.isalnum()
    assert password != catalogue.new_password()


def test_manifest_addons_in_both_of_scalingos_forms() -> None:
    manifest, problems = catalogue.parse_manifest(
        {
            "addons": [
                {"plan": "postgresql:postgresql-starter-512", "options": {"version": "15"}},
                "redis:redis-starter-128",
                "postgresql:postgresql-sandbox",  # a second of one provider: the first wins
            ],
            "scripts": {"postdeploy": " python manage.py migrate ", "first-deploy": "make seed"},
        }
    )
    assert problems == []
    assert manifest.addons == (
        ("postgresql", "postgresql-starter-512"),
        ("redis", "redis-starter-128"),
    )
    assert manifest.hook(first=False) == "python manage.py migrate"
    assert manifest.hook(first=True) == "make seed"


def test_manifest_problems_are_named() -> None:
    manifest, problems = catalogue.parse_manifest(
        {"addons": ["mongodb:mongo-sandbox", "redis:redis-huge", 42], "scripts": {"postdeploy": ""}}
    )
    assert manifest.addons == ()
    assert any("no provider 'mongodb'" in p for p in problems)
    assert any("redis has no plan 'redis-huge'" in p for p in problems)
    assert any("42" in p for p in problems)
    assert any("scripts.postdeploy" in p for p in problems)
    assert catalogue.parse_manifest([])[1] == ["scalingo.json must hold a JSON object"]


def test_a_provider_without_a_plan_gets_its_first() -> None:
    manifest, _ = catalogue.parse_manifest({"addons": ["postgresql"]})
    assert manifest.addons == (("postgresql", "postgresql-sandbox"),)
