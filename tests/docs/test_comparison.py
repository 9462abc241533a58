"""docs/comparison.md: its numbers are generated from the committed bench run and the code's defaults."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from bench import comparison, report
from services.auth.settings import Settings, rotation_policy
from shared.web import VerifierSettings

# A number as prose writes one (300, 1,849, 0.31), not a digit inside a name (RS256, SHA-256,
# argon2id) or a path (decisions/0002-...).
_NUMBER = re.compile(r"(?<![\w\-./])\d+(?:,\d{3})*(?:\.\d+)?(?![\w-])")


def committed() -> tuple[str, dict[str, Any]]:
    return comparison.DOCUMENT.read_text(), json.loads(comparison.RESULTS.read_text())


def numbers(text: str) -> list[str]:
    return _NUMBER.findall(text)


def leaves(value: Any) -> Iterator[float]:
    if isinstance(value, dict):
        for item in value.values():
            yield from leaves(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


def spellings(value: float) -> set[str]:
    """How a number may be written: rounded to whole units or hundredths, with or without commas."""
    return {f"{value:,.0f}", f"{value:.0f}", f"{value:,.2f}", f"{value:.2f}"}


def allowed_numbers(data: dict[str, Any]) -> set[str]:
    """Every figure the results hold or the bench derives from them, and the code's defaults.

    Computed here, apart from the generator, from the same sources a reader would check.
    """
    rotation = rotation_policy({})
    verifier = VerifierSettings.from_env({})
    auth = Settings.from_env({"APP_ENV": "dev", "SESSION_SECRET": "defaults-only"})
    code = [
        rotation.token_ttl,
        rotation.jwks_max_age,
        rotation.publish_lead,
        rotation.retired_period,
        verifier.leeway,
        verifier.jwks.max_stale,
        verifier.verified_cache_size,
        auth.session_idle_timeout,
        auth.session_absolute_timeout,
        # The revocation window: a token's lifetime, then the leeway verifiers grant past exp.
        rotation.token_ttl + verifier.leeway,
        verifier.revocations.max_stale if verifier.revocations else 0.0,
    ]
    derived = [item.value for item in report.ratios(data)]
    allowed: set[str] = set()
    for value in [*leaves(data), *derived, *code]:
        allowed |= spellings(value)
    return allowed


def test_regenerating_from_the_committed_results_reproduces_the_committed_file() -> None:
    text, data = committed()
    assert comparison.render(text, data, comparison.defaults()) == text, (
        "docs/comparison.md is out of date: run `python -m bench.comparison`"
    )


def test_every_number_in_the_generated_regions_comes_from_the_results_or_the_code() -> None:
    text, data = committed()
    allowed = allowed_numbers(data)
    found = [
        number
        for body in comparison.regions(text).values()
        for number in numbers(body.replace(data["when"], ""))
    ]
    assert len(found) > 40, "the generated regions lost their numbers"
    unexplained = sorted(set(found) - allowed)
    assert not unexplained, f"numbers in docs/comparison.md that no result or default explains: {unexplained}"


def test_the_hand_written_prose_types_no_number() -> None:
    text, _ = committed()
    prose = text
    for body in comparison.regions(text).values():
        prose = prose.replace(body, "")
    assert numbers(prose) == [], "numbers belong in a generated region, computed from the results"


def test_the_table_follows_the_results_it_is_generated_from() -> None:
    text, data = committed()
    data["sizes"]["access_token_bytes"] = 12345
    data["scenarios"]["session_lookup"]["rps"] = 4321.0

    table = comparison.regions(comparison.render(text, data, comparison.defaults()))["table"]

    assert "12,345 bytes per request" in table
    assert "4,321 req/s" in table
    assert "802" not in numbers(table)


def test_a_number_that_no_result_explains_is_caught() -> None:
    _, data = committed()
    allowed = allowed_numbers(data)
    token_bytes = data["sizes"]["access_token_bytes"]
    lookup_vs_verify = next(
        r.value for r in report.ratios(data) if r.name.startswith("session lookup / verify warm")
    )
    assert str(token_bytes) in allowed
    assert f"{lookup_vs_verify:.2f}" in allowed
    # Off by one in the last digit: nothing in the results explains these (checked, not assumed).
    near_misses = {str(token_bytes + 1), f"{lookup_vs_verify + 0.01:.2f}"}
    assert not near_misses & {spelling for value in leaves(data) for spelling in spellings(value)}
    assert not near_misses & allowed
