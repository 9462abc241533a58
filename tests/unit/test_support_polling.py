"""The suite's one poll helper: it returns what it waited for, and a failure says what and what was seen."""

from __future__ import annotations

import itertools

import pytest

from tests.support.polling import poll


def test_poll_returns_the_first_truthy_value_the_probe_gives() -> None:
    answers = iter([None, 0, "", {"kid": "k-2"}, {"kid": "k-3"}])
    assert poll(lambda: next(answers), within=5, what="a key", every=0) == {"kid": "k-2"}


def test_poll_waits_for_what_until_accepts_and_returns_it() -> None:
    statuses = iter([503, 503, 200])
    assert (
        poll(lambda: next(statuses), until=lambda status: status == 200, within=5, what="a 200", every=0)
        == 200
    )


def test_a_timeout_names_what_was_awaited_and_the_last_value_seen() -> None:
    counter = itertools.count()
    with pytest.raises(
        AssertionError, match=r"^gave up waiting for a negative count after 0.05 s; last seen: [1-9]"
    ):
        poll(lambda: next(counter), until=lambda n: n < 0, within=0.05, what="a negative count", every=0.01)


def test_a_timeout_shows_the_last_falsy_value() -> None:
    with pytest.raises(AssertionError, match=r"last seen: \[\]"):
        poll(lambda: [], within=0.02, what="a non-empty list", every=0.01)


def test_ignored_errors_count_as_not_yet_and_the_last_one_is_reported() -> None:
    attempts = iter([ConnectionRefusedError("starting"), ConnectionRefusedError("starting"), None])

    def probe() -> str:
        refused = next(attempts)
        if refused is not None:
            raise refused
        return "up"

    assert poll(probe, within=5, what="the server", every=0, ignoring=(ConnectionError,)) == "up"
    with pytest.raises(AssertionError, match=r"last seen: ConnectionRefusedError\('refused'\)"):
        poll(_refuse, within=0.02, what="the server", every=0.01, ignoring=(ConnectionError,))


def test_other_errors_propagate_at_once() -> None:
    calls = []

    def probe() -> bool:
        calls.append(1)
        raise ValueError("a bug in the probe")

    with pytest.raises(ValueError, match="a bug in the probe"):
        poll(probe, within=5, what="anything", ignoring=(ConnectionError,))
    assert len(calls) == 1


def _refuse() -> bool:
    raise ConnectionRefusedError("refused")
