"""A worker asks the API process that holds an uploaded source for it, with the token of
the deployment's download URL (whose host may be a load balancer)."""

from __future__ import annotations

from dockyard.services.deployments import Job
from dockyard.worker.runner import source_url_at_holder


def job(holder: str | None) -> Job:
    return Job(
        deployment_id="d1",
        app_id="a1",
        app_name="app",
        sandbox_uid=20000,
        source_url="https://api.example.com/v1/sources/s1?token=secret",
        source_id="s1",
        env={},
        source_holder=holder,
    )


def test_the_download_url_is_asked_of_the_holder_with_its_token() -> None:
    assert (
        source_url_at_holder(job("http://10.0.0.7:8088"))
        == "http://10.0.0.7:8088/v1/sources/s1?token=secret"
    )


def test_a_source_uploaded_before_holders_were_recorded_is_fetched_as_before() -> None:
    assert source_url_at_holder(job(None)) == "https://api.example.com/v1/sources/s1?token=secret"
