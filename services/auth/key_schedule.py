"""The signing keys' lifecycle as pure rules: ``next`` -> ``active`` -> ``retired`` -> removed.

A schedule says, for each key, when it was created, when it starts signing, when it stops
signing and when it leaves the JWKS. Every auth replica reads the same schedule and computes
the active key from it and the clock, so replicas agree without talking to each other. This
module only judges and plans schedules; ``key_store`` reads and writes them (and the keys).
Nothing here performs I/O or reads a clock: callers pass ``now`` (Unix seconds).
"""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, replace


class ScheduleError(Exception):
    """A requested lifecycle change is not allowed; the message says why."""


class KeyState(enum.StrEnum):
    NEXT = "next"
    ACTIVE = "active"
    RETIRED = "retired"
    REMOVED = "removed"


@dataclass(frozen=True)
class RotationPolicy:
    """The timings a rotation must respect so that no valid token ever fails.

    ``token_ttl``: lifetime of an access token. ``clock_skew``: the largest clock difference
    between any two hosts (auth replicas, verifiers, the operator's), which is also the
    verifiers' leeway. ``jwks_max_age``: how long a verifier may keep a JWKS before it must
    refetch. ``reload_interval``: how long auth takes to notice a changed key directory.
    ``margin``: slack for a slow or failed fetch.
    """

    token_ttl: int = 300
    clock_skew: int = 10
    jwks_max_age: int = 300
    reload_interval: float = 5.0
    margin: int = 30

    @property
    def publish_lead(self) -> float:
        """How long a new key is published before it may sign.

        Auth notices the new file within ``reload_interval``; a verifier that fetched just
        before that keeps its JWKS for ``jwks_max_age``; the operator's clock may be behind and
        a replica's ahead, one ``clock_skew`` each.
        """
        return self.reload_interval + self.jwks_max_age + 2 * self.clock_skew + self.margin

    @property
    def retired_period(self) -> float:
        """How long a key stays published after it stopped signing.

        Its last token was signed just before ``retires_at`` by a replica whose clock may be
        ``clock_skew`` behind, lives ``token_ttl``, is accepted ``clock_skew`` (the leeway) past
        its ``exp`` by a verifier, and the replica that stops publishing may be ``clock_skew``
        ahead: ``token_ttl + 3 * clock_skew``, plus the margin.
        """
        return self.token_ttl + 3 * self.clock_skew + self.margin


@dataclass(frozen=True)
class KeyTimes:
    """One key's schedule, in Unix seconds; ``None`` means "not scheduled yet"."""

    created_at: float
    activates_at: float
    retires_at: float | None = None
    removes_at: float | None = None

    def state(self, now: float) -> KeyState:
        if self.removes_at is not None and now >= self.removes_at:
            return KeyState.REMOVED
        if self.retires_at is not None and now >= self.retires_at:
            return KeyState.RETIRED
        if now >= self.activates_at:
            return KeyState.ACTIVE
        return KeyState.NEXT

    def as_dict(self) -> dict[str, float | None]:
        return {
            "created_at": self.created_at,
            "activates_at": self.activates_at,
            "retires_at": self.retires_at,
            "removes_at": self.removes_at,
        }


Schedule = dict[str, KeyTimes]

# Times are floats: ``now + lead - now`` may come out a hair under ``lead``.
_ROUNDING = 1e-3


def active_kid(schedule: Schedule, now: float) -> str | None:
    """The key that signs at ``now``: of the keys in state ``active``, the one activated last."""
    active = [
        (times.activates_at, kid) for kid, times in schedule.items() if times.state(now) is KeyState.ACTIVE
    ]
    return max(active)[1] if active else None


def next_kid(schedule: Schedule, now: float) -> str | None:
    """The key published to take over signing (a rotation under way), if any."""
    pending = sorted(kid for kid, times in schedule.items() if times.state(now) is KeyState.NEXT)
    return pending[0] if pending else None


def rotation_due(schedule: Schedule, now: float, *, active_for: float) -> bool:
    """Whether a scheduled (cron) rotation should run: no rotation is under way and the signing
    key has signed for at least ``active_for`` seconds (or none signs at all)."""
    if next_kid(schedule, now) is not None:
        return False
    current = active_kid(schedule, now)
    return current is None or now - schedule[current].activates_at >= active_for


def check_schedule(schedule: Schedule, policy: RotationPolicy | None, now: float) -> None:
    """Raise :class:`ScheduleError` unless exactly one key signs from now on and no valid token breaks.

    Past transitions are not re-judged (a later change of settings cannot undo them); every
    future one must give verifiers ``publish_lead`` to learn a key and ``retired_period`` to
    stop needing one.
    """
    if active_kid(schedule, now) is None:
        raise ScheduleError("no key is active now")
    ordered = sorted(schedule.items(), key=lambda item: (item[1].activates_at, item[0]))
    live = [(kid, times) for kid, times in ordered if times.state(now) is not KeyState.REMOVED]
    for kid, times in live:
        if times.retires_at is not None and times.retires_at < times.activates_at:
            raise ScheduleError(f"key {kid} retires before it activates")
        if times.removes_at is not None and (times.retires_at is None or times.removes_at < times.retires_at):
            raise ScheduleError(f"key {kid} is removed before it retires")
    signers = [(kid, times) for kid, times in live if times.state(now) in (KeyState.ACTIVE, KeyState.NEXT)]
    for (kid, times), (successor, successor_times) in itertools.pairwise(signers):
        if times.retires_at is None or times.retires_at > successor_times.activates_at:
            raise ScheduleError(f"keys {kid} and {successor} would both sign")
        if times.retires_at < successor_times.activates_at:
            raise ScheduleError(f"no key signs between {kid} retiring and {successor} activating")
    last_kid, last = signers[-1]
    if last.retires_at is not None:
        raise ScheduleError(f"key {last_kid} retires and no key takes over")
    if policy is None:
        return
    for kid, times in live:
        if (
            times.activates_at > now
            and times.activates_at - times.created_at < policy.publish_lead - _ROUNDING
        ):
            raise ScheduleError(
                f"key {kid} would sign {times.activates_at - times.created_at:.0f} s after it was created;"
                f" verifiers need {policy.publish_lead:.0f} s to learn it"
            )
        if (
            times.retires_at is not None
            and times.removes_at is not None
            and times.removes_at > now
            and times.removes_at - times.retires_at < policy.retired_period - _ROUNDING
        ):
            raise ScheduleError(
                f"key {kid} would leave the JWKS {times.removes_at - times.retires_at:.0f} s after it stops"
                f" signing; its tokens need {policy.retired_period:.0f} s"
            )


def plan_rotation(schedule: Schedule, new_kid: str, policy: RotationPolicy, now: float) -> Schedule:
    """The schedule with ``new_kid`` published now and signing after ``publish_lead``."""
    current = active_kid(schedule, now)
    if current is None:
        raise ScheduleError("no key is active now")
    pending = next_kid(schedule, now)
    if pending is not None:
        raise ScheduleError(f"a rotation is already scheduled: key {pending} is next")
    switch = now + policy.publish_lead
    planned = dict(schedule)
    for kid, times in schedule.items():
        # Retired keys from a legacy directory have no removal time yet: give them one now.
        if times.state(now) is KeyState.RETIRED and times.removes_at is None:
            planned[kid] = replace(times, removes_at=now + policy.retired_period)
    planned[current] = replace(
        schedule[current], retires_at=switch, removes_at=switch + policy.retired_period
    )
    planned[new_kid] = KeyTimes(created_at=now, activates_at=switch)
    return planned


def plan_retirement(schedule: Schedule, kid: str, now: float, *, force: bool) -> Schedule:
    """The schedule after ending ``kid``'s life as early as is safe, or at once with ``force``.

    Safe: a ``next`` key is withdrawn (it never signed). An ``active`` key needs ``rotate``
    first; a ``retired`` one leaves when its tokens have expired. ``force`` is for a
    compromised key: it leaves the JWKS now, its tokens fail at once, and if it was signing,
    the next key signs from now on (verifiers that have not cached it refetch once).
    """
    if kid not in schedule or schedule[kid].state(now) is KeyState.REMOVED:
        raise ScheduleError(f"no published key {kid}")
    times = schedule[kid]
    state = times.state(now)
    planned = dict(schedule)
    if state is KeyState.NEXT:
        del planned[kid]
        previous = [k for k, t in planned.items() if t.retires_at == times.activates_at]
        for other in previous:
            planned[other] = replace(planned[other], retires_at=None, removes_at=None)
        return planned
    if not force:
        if state is KeyState.ACTIVE:
            raise ScheduleError(
                f"key {kid} is signing: run `keys rotate`"
                f" (or `keys retire {kid} --force` if it is compromised)"
            )
        raise ScheduleError(
            f"key {kid} is retired and leaves the JWKS at {format_time(times.removes_at)};"
            " use --force only if it is compromised (its unexpired tokens fail at once)"
        )
    planned[kid] = replace(times, retires_at=min(times.retires_at or now, now), removes_at=now)
    if state is KeyState.ACTIVE:
        successors = sorted((t.activates_at, k) for k, t in planned.items() if t.state(now) is KeyState.NEXT)
        if not successors:
            raise ScheduleError(f"key {kid} is the only signing key: run `keys rotate` first")
        successor = successors[0][1]
        planned[successor] = replace(planned[successor], activates_at=now)
    return planned


def format_time(value: float | None) -> str:
    """A schedule time as operators read it (UTC, to the second); ``-`` for "not scheduled"."""
    if value is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def unremoved(schedule: Schedule, now: float) -> Schedule:
    """The schedule without the keys that have left the JWKS."""
    return {kid: times for kid, times in schedule.items() if times.state(now) is not KeyState.REMOVED}
