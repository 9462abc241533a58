"""The key lifecycle: schedule arithmetic, rotation and retirement plans, replicas that agree, reloads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from services.auth.cli import kid_arguments
from services.auth.key_schedule import (
    KeyState,
    KeyTimes,
    RotationPolicy,
    ScheduleError,
    check_schedule,
    next_kid,
    plan_rotation,
    rotation_due,
)
from services.auth.key_store import (
    KeyFileError,
    KeyStore,
    create_key,
    init_keys,
    load_keys,
    read_schedule,
    retire_key,
    rotate_keys,
)

POLICY = RotationPolicy(token_ttl=300, clock_skew=10, jwks_max_age=300, reload_interval=5, margin=30)
T0 = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_the_default_timeline() -> None:
    # 5 s reload + 300 s max-age + 2 x 10 s skew + 30 s margin before a new key signs;
    # 300 s token + 3 x 10 s skew + 30 s margin before a retired key leaves the JWKS.
    assert POLICY.publish_lead == 355
    assert POLICY.retired_period == 360


def test_a_rotation_walks_next_active_retired_removed(tmp_path: Path) -> None:
    first = init_keys(tmp_path, now=T0)
    assert first is not None
    second = rotate_keys(tmp_path, POLICY, now=T0 + 10)
    schedule = read_schedule(tmp_path)
    switch = T0 + 10 + POLICY.publish_lead
    assert schedule[second] == KeyTimes(created_at=T0 + 10, activates_at=switch)
    assert schedule[first].retires_at == switch
    assert schedule[first].removes_at == switch + POLICY.retired_period
    states = [
        (schedule[first].state(moment), schedule[second].state(moment))
        for moment in (T0 + 11, switch - 0.001, switch, switch + POLICY.retired_period)
    ]
    assert states == [
        (KeyState.ACTIVE, KeyState.NEXT),
        (KeyState.ACTIVE, KeyState.NEXT),
        (KeyState.RETIRED, KeyState.ACTIVE),
        (KeyState.REMOVED, KeyState.ACTIVE),
    ]
    keyring = load_keys(tmp_path, POLICY, now=T0 + 11)
    assert keyring.active_kid(T0 + 11) == first
    assert keyring.published(T0 + 11) == sorted([first, second])
    assert keyring.published(switch + POLICY.retired_period) == [second]


def test_the_next_rotation_deletes_the_files_of_removed_keys(tmp_path: Path) -> None:
    first = init_keys(tmp_path, now=T0)
    second = rotate_keys(tmp_path, POLICY, now=T0)
    later = T0 + POLICY.publish_lead + POLICY.retired_period + 1
    third = rotate_keys(tmp_path, POLICY, now=later)
    assert {path.stem for path in tmp_path.glob("*.pem")} == {second, third}
    assert first not in read_schedule(tmp_path)


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ({"a": KeyTimes(T0, T0, T0 + 300, T0 + 700), "b": KeyTimes(T0, T0 + 300)}, "would sign 300 s"),
        (
            {"a": KeyTimes(T0 - 400, T0 - 400, T0 + 1, T0 + 2), "b": KeyTimes(T0 - 400, T0 + 1)},
            "its tokens need",
        ),
        ({"a": KeyTimes(T0, T0), "b": KeyTimes(T0 - 999, T0 + 400)}, "would both sign"),
        (
            {"a": KeyTimes(T0, T0, T0 + 400, T0 + 900), "b": KeyTimes(T0 - 999, T0 + 500)},
            "no key signs between",
        ),
        ({"a": KeyTimes(T0 + 5, T0 + 5)}, "no key is active now"),
        ({"a": KeyTimes(T0, T0, T0 + 999, T0 + 9999)}, "no key takes over"),
    ],
    ids=["published-too-briefly", "removed-too-early", "overlap", "gap", "none-active", "no-successor"],
)
def test_a_schedule_that_would_break_a_valid_token_is_refused(
    times: dict[str, KeyTimes], message: str
) -> None:
    with pytest.raises(ScheduleError, match=message):
        check_schedule(times, POLICY, T0 + 1)


def test_auth_refuses_to_start_on_a_hand_edited_unsafe_schedule(tmp_path: Path) -> None:
    first = init_keys(tmp_path, now=T0)
    rotate_keys(tmp_path, POLICY, now=T0)
    document = json.loads((tmp_path / "keys.json").read_text())
    document["keys"][first]["removes_at"] = document["keys"][first]["retires_at"] + 60
    (tmp_path / "keys.json").write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match=f"{tmp_path / 'keys.json'}: key {first} would leave the JWKS"):
        KeyStore(tmp_path, POLICY, clock=lambda: T0 + 1)


def test_two_replicas_agree_on_the_signing_key_at_every_moment_of_a_rotation(tmp_path: Path) -> None:
    clock = Clock()
    init_keys(tmp_path, now=T0)
    early = KeyStore(tmp_path, POLICY, clock=clock)
    second = rotate_keys(tmp_path, POLICY, now=T0 + 1)
    # One replica started after the change, the other noticed it on a later poll.
    late = KeyStore(tmp_path, POLICY, clock=clock)
    clock.now = T0 + 3
    assert early.reload_if_changed()
    for offset in range(0, int(POLICY.publish_lead + POLICY.retired_period) + 20, 7):
        clock.now = T0 + 1 + offset
        assert early.keyring.active_kid(clock.now) == late.keyring.active_kid(clock.now)
        assert early.jwks() == late.jwks()
    assert early.keyring.active_kid(clock.now) == second


def test_a_broken_file_on_reload_keeps_the_last_good_keys_and_says_so(tmp_path: Path) -> None:
    first = init_keys(tmp_path, now=T0)
    store = KeyStore(tmp_path, POLICY, clock=lambda: T0 + 1)
    broken = tmp_path / "half-copied.pem"
    broken.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA")
    assert not store.reload_if_changed()
    assert store.keyring.active_kid(T0 + 1) == first
    status = store.status()
    assert status["ready"] is True
    assert status["reload_failures"] == 1
    assert str(broken) in status["last_error"]
    broken.unlink()
    assert store.reload_if_changed()
    assert store.status()["last_error"] is None
    assert not store.reload_if_changed()


def test_a_legacy_directory_is_migrated_by_the_first_rotation(tmp_path: Path) -> None:
    active = create_key(tmp_path)
    other = create_key(tmp_path)
    (tmp_path / "active").write_text(active)
    assert load_keys(tmp_path, POLICY, now=T0).active_kid(T0) == active
    new = rotate_keys(tmp_path, POLICY, now=T0)
    assert not (tmp_path / "active").exists()
    schedule = read_schedule(tmp_path)
    assert schedule[active].retires_at == schedule[new].activates_at
    # The old extra key was published and may have signed once: it leaves after a full period.
    assert schedule[other].state(T0) is KeyState.RETIRED
    assert schedule[other].removes_at == T0 + POLICY.retired_period


def test_retire_force_removes_a_compromised_active_key_and_the_next_one_signs_at_once(tmp_path: Path) -> None:
    first = init_keys(tmp_path, now=T0)
    with pytest.raises(ScheduleError, match="only signing key"):
        retire_key(tmp_path, first, POLICY, force=True, now=T0 + 1)
    second = rotate_keys(tmp_path, POLICY, now=T0 + 1)
    retire_key(tmp_path, first, POLICY, force=True, now=T0 + 2)
    keyring = load_keys(tmp_path, POLICY, now=T0 + 2)
    assert keyring.active_kid(T0 + 2) == second
    assert keyring.published(T0 + 2) == [second]
    assert [path.stem for path in tmp_path.glob("*.pem")] == [second]


def test_keys_are_written_owner_only_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    init_keys(tmp_path, now=T0)
    rotate_keys(tmp_path, POLICY, now=T0)
    names = sorted(os.listdir(tmp_path))
    assert [name for name in names if name.endswith(".tmp")] == []
    assert oct(os.stat(tmp_path / "keys.json").st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b'{"version": 1, "keys": {"a": {"created_at": 1, "activates_at": 1},'
        b' "a": {"created_at": 2, "activates_at": 2}}}',
        b'{"version": 2, "keys": {}}',
        b'{"version": 1, "keys": {"a": {"created_at": "yesterday", "activates_at": 1}}}',
        b'{"version": 1, "keys": {"a": {"created_at": NaN, "activates_at": 1}}}',
    ],
    ids=["not-json", "duplicate-kid", "version", "not-a-number", "nan"],
)
def test_a_broken_schedule_is_named(tmp_path: Path, content: bytes) -> None:
    init_keys(tmp_path, now=T0)
    (tmp_path / "keys.json").write_bytes(content)
    with pytest.raises(KeyFileError, match=f"{tmp_path / 'keys.json'}: not a valid key schedule"):
        load_keys(tmp_path, POLICY, now=T0)


def test_a_scheduled_key_without_its_file_is_named(tmp_path: Path) -> None:
    init_keys(tmp_path, now=T0)
    second = rotate_keys(tmp_path, POLICY, now=T0)
    (tmp_path / f"{second}.pem").unlink()
    with pytest.raises(KeyFileError, match=f"{tmp_path / (second + '.pem')}: missing; keys.json schedules"):
        load_keys(tmp_path, POLICY, now=T0)


@pytest.mark.parametrize(
    ("argv", "parsed"),
    [
        (["keys", "retire", "-eYq", "--force"], ["keys", "retire", "--force", "--", "-eYq"]),
        (["keys", "retire", "abc"], ["keys", "retire", "--", "abc"]),
        (["keys", "retire", "--", "-eYq"], ["keys", "retire", "--", "-eYq"]),
        (["keys", "list"], ["keys", "list"]),
    ],
)
def test_a_kid_that_starts_with_a_dash_is_not_taken_for_an_option(argv: list[str], parsed: list[str]) -> None:
    assert kid_arguments(argv) == parsed


def test_a_rotation_is_due_once_the_signing_key_has_signed_long_enough_and_none_is_pending() -> None:
    schedule = {"first": KeyTimes(created_at=T0, activates_at=T0)}
    assert not rotation_due(schedule, T0 + 3599, active_for=3600)
    assert rotation_due(schedule, T0 + 3600, active_for=3600)
    rotating = plan_rotation(schedule, "second", POLICY, T0 + 3600)
    assert next_kid(rotating, T0 + 3600) == "second"
    assert not rotation_due(rotating, T0 + 3600, active_for=0), "a rotation is already under way"
    switched = T0 + 3600 + POLICY.publish_lead
    assert next_kid(rotating, switched) is None
    assert not rotation_due(rotating, switched, active_for=3600)
    assert rotation_due(rotating, switched + 3600, active_for=3600)
