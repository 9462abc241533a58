"""The pure rules of revocation cutoffs: what an entry covers, how long it lives, the feed's headers."""

from __future__ import annotations

import pytest

from services.auth import revocations
from services.auth.revocations import Entry, Kind

NOW = 1_764_762_000.25


def test_a_cutoff_covers_every_token_minted_in_the_second_of_the_operation() -> None:
    before = revocations.cutoff(NOW)
    assert before == 1_764_762_001
    # A token minted this very second carries iat = floor(now).
    assert Entry(Kind.SESSION, "s1", before, before + 330).covers(Kind.SESSION, "s1", int(NOW))
    assert not Entry(Kind.SESSION, "s1", before, before + 330).covers(Kind.SESSION, "s1", before)


def test_an_entry_lives_until_its_last_covered_token_expires_at_the_largest_leeway() -> None:
    (entry,) = revocations.revoke(Kind.USER, ["u1"], NOW, token_ttl=300)
    assert entry == Entry(Kind.USER, "u1", 1_764_762_001, 1_764_762_001 + 300 + 30)


def test_an_entry_covers_only_its_own_kind_and_id() -> None:
    entry = Entry(Kind.SESSION, "abc", 100, 430)
    assert entry.covers(Kind.SESSION, "abc", 99)
    assert not entry.covers(Kind.USER, "abc", 99)
    assert not entry.covers(Kind.SESSION, "abd", 99)


def test_a_key_entry_reaches_past_what_a_thief_can_sign_while_verifiers_still_hold_the_key() -> None:
    entry = revocations.revoke_key("kid-1", NOW, token_ttl=300, jwks_max_age=300)
    # A thief's token may carry an iat up to the leeway ahead, for as long as caches keep the key.
    assert entry.before == revocations.cutoff(NOW) + 300 + 30
    assert entry.covers(Kind.KEY, "kid-1", int(NOW) + 300 + 29)
    assert entry.until == entry.before + 330


def test_live_drops_ended_entries_and_keeps_the_latest_cutoff_per_id() -> None:
    old = Entry(Kind.SESSION, "s1", 100, 430)
    newer = Entry(Kind.SESSION, "s1", 200, 530)
    ended = Entry(Kind.USER, "u1", 50, 380)
    assert revocations.live([old, newer, ended], 400) == (newer,)
    # At exactly ``until`` no covered token is valid any more.
    assert revocations.live([newer], 530) == ()


def test_what_a_lost_set_needs_recorded_again() -> None:
    held = [Entry(Kind.SESSION, "s1", 100, 430), Entry(Kind.USER, "u1", 200, 530), Entry(Kind.KEY, "k", 1, 2)]
    current = [Entry(Kind.SESSION, "s1", 100, 430), Entry(Kind.USER, "u1", 150, 480)]
    # The ended key entry is not worth restoring; a weaker cutoff in the new set does not count.
    assert revocations.missing_from(held, current, 300) == [Entry(Kind.USER, "u1", 200, 530)]
    assert revocations.missing_from(held, [*current, *held], 300) == []


def test_the_stored_form_round_trips_and_malformed_members_are_skipped() -> None:
    entry = Entry(Kind.KEY, "Ab-_9.x~", 100, 430)
    assert Entry.from_member(entry.as_member(), 430.0) == entry
    assert Entry.from_member("nonsense", 430.0) is None
    assert Entry.from_member("token\nx\n1", 430.0) is None
    assert Entry.from_member("session\nx\nnot-a-number", 430.0) is None


@pytest.mark.parametrize("bad", ["", "a b", "a\nb", "x" * 129, "é"])
def test_ids_that_could_break_the_stored_form_or_bloat_the_feed_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="a revocation id must match"):
        Entry(Kind.SESSION, bad, 1, 2)


def test_the_payload_lists_entries_in_the_documented_shape() -> None:
    entries = (Entry(Kind.SESSION, "s1", 100, 430),)
    assert revocations.feed_claims("https://issuer", NOW, "ep", 7, entries) == {
        "iss": "https://issuer",
        "iat": 1_764_762_000,
        "epoch": "ep",
        "version": 7,
        "entries": [{"kind": "session", "id": "s1", "before": 100, "until": 430}],
    }
    assert revocations.etag("ep", 7) == '"ep.7"'


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], False),
        (['"ep.7"'], True),
        (['W/"ep.7"'], True),
        (['"ep.6", "ep.7"'], True),
        (["*"], True),
        (['"ep.6"'], False),
        (["ep.7"], False),
    ],
)
def test_if_none_match_is_read_as_rfc_9110_lists_it(headers: list[str], expected: bool) -> None:
    assert revocations.not_modified(headers, '"ep.7"') is expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], None),
        (["wait=10"], 10),
        (["respond-async, wait=5"], 5),
        (["WAIT = 3"], 3),
        (['wait="4"'], 4),
        (["wait=86400"], 30),
        (["wait=-1"], None),
        (["wait=abc"], None),
        (["wait=99999999999999999999"], None),
        (["return=minimal"], None),
    ],
)
def test_prefer_wait_is_capped_and_a_malformed_one_ignored(headers: list[str], expected: int | None) -> None:
    assert revocations.wanted_wait(headers) == expected
