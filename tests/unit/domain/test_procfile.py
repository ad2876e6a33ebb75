import pytest

from dockyard.domain.procfile import ProcfileError, parse_procfile


def test_parses_processes_in_order_ignoring_comments_and_blank_lines() -> None:
    text = (
        "\ufeff# how to run\nweb: gunicorn app:app --bind 0.0.0.0:$PORT\n\n  worker:python w.py\r\n"
    )
    assert parse_procfile(text) == {
        "web": "gunicorn app:app --bind 0.0.0.0:$PORT",
        "worker": "python w.py",
    }


def test_empty_procfile_has_no_processes() -> None:
    assert parse_procfile("") == {}
    assert parse_procfile("# nothing\n\n") == {}


def test_command_may_contain_colons() -> None:
    assert parse_procfile("web: python -c 'print(1)' :x") == {"web": "python -c 'print(1)' :x"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web python app.py", "line 1 is not of the form"),
        ("we b: x", "not a valid process type name"),
        ("web.1: x", "not a valid process type name"),
        ("ünï: x", "not a valid process type name"),
        (": x", "not a valid process type name"),
        ("web:", "has no command"),
        ("web: a\nweb: b", "line 2: process type 'web' is defined twice"),
        ("x" * 64 + ": a", "at most 63"),
    ],
)
def test_rejects_what_it_cannot_understand(text: str, message: str) -> None:
    with pytest.raises(ProcfileError, match=message):
        parse_procfile(text)
