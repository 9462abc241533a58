"""Malformed and oversized tokens: every way to be not quite a compact JWS, answered 401 and never 500.

Most cases start from a token the real key signed and break its encoding, so a verifier that
is lenient about spelling (padding, alphabet, duplicate members, trailing bits) would accept
it. Oversized tokens must be refused without being parsed and without a hang.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from deploy.devcluster import Cluster

from .forge import (
    TARGETS,
    assert_accepted,
    assert_not_echoed,
    assert_rejected,
    b64,
    claims,
    header,
    http,
    present,
    segment,
    signed_by_cluster,
    target_url,
)

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("target", TARGETS)]

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def real_token(cluster: Cluster) -> str:
    return signed_by_cluster(cluster, header(cluster), claims(cluster))


def raw_signed(cluster: Cluster, header_text: str, payload_text: str) -> str:
    """The real key's signature over these exact JSON texts."""
    return signed_by_cluster(cluster, header_text, payload_text)


def test_control_the_unbroken_token_is_accepted(cluster: Cluster, target: str) -> None:
    assert_accepted(present(cluster, target, real_token(cluster)))


@pytest.mark.parametrize(
    "reshape",
    [
        pytest.param(lambda h, p, s: h, id="1 segment"),
        pytest.param(lambda h, p, s: f"{h}.{p}", id="2 segments"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s}.{s}", id="4 segments"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s}..", id="5 segments, two empty"),
        pytest.param(lambda h, p, s: f"{h}.{b64(b'key')}.{b64(b'iv')}.{p}.{s}", id="5 segments, JWE-shaped"),
        pytest.param(lambda h, p, s: f"{h}..{s}", id="empty payload"),
        pytest.param(lambda h, p, s: f".{p}.{s}", id="empty header"),
        pytest.param(lambda h, p, s: "..", id="only dots"),
        pytest.param(lambda h, p, s: f"{h}.{p}.{s}.", id="trailing dot"),
        pytest.param(lambda h, p, s: f".{h}.{p}.{s}", id="leading dot"),
    ],
)
def test_wrong_segment_count(cluster: Cluster, target: str, reshape: Callable[[str, str, str], str]) -> None:
    token = reshape(*real_token(cluster).split("."))

    assert_rejected(present(cluster, target, token), token)


def _with_padding(index: int) -> Callable[[list[str]], list[str]]:
    def change(parts: list[str]) -> list[str]:
        parts[index] += "=" * (-len(parts[index]) % 4 or 4)
        return parts

    return change


def _non_canonical_last_character(parts: list[str]) -> list[str]:
    # 256 signature bytes take 342 characters, whose last carries 4 unused bits: set one.
    signature = parts[2]
    assert len(signature) % 4 == 2, len(signature)
    last = _ALPHABET.index(signature[-1])
    parts[2] = signature[:-1] + _ALPHABET[last ^ 1]
    return parts


BAD_BASE64 = [
    pytest.param(_with_padding(0), id="padded header"),
    pytest.param(_with_padding(1), id="padded payload"),
    pytest.param(_with_padding(2), id="padded signature"),
    pytest.param(
        lambda parts: [part.replace("-", "+").replace("_", "/") for part in parts], id="standard alphabet +/"
    ),
    pytest.param(lambda parts: [parts[0], parts[1], parts[2][:100] + "\t" + parts[2][100:]], id="tab inside"),
    pytest.param(lambda parts: [parts[0], parts[1][:10] + " " + parts[1][10:], parts[2]], id="space inside"),
    pytest.param(lambda parts: [parts[0], parts[1] + "é", parts[2]], id="non-ASCII letter"),
    pytest.param(lambda parts: [parts[0], parts[1], parts[2] + "\u00a0"], id="no-break space"),
    pytest.param(lambda parts: [parts[0] + "!", parts[1], parts[2]], id="punctuation"),
    pytest.param(lambda parts: [parts[0], parts[1], parts[2][:-1]], id="impossible length"),
    pytest.param(_non_canonical_last_character, id="non-canonical trailing bits"),
]


@pytest.mark.parametrize("damage", BAD_BASE64)
def test_bad_base64url(cluster: Cluster, target: str, damage: Callable[[list[str]], list[str]]) -> None:
    original = real_token(cluster)
    token = ".".join(damage(original.split(".")))
    assert token != original

    assert_rejected(present(cluster, target, token.encode()), token)


def test_ideographic_full_stops_as_separators(cluster: Cluster, target: str) -> None:
    token = real_token(cluster).replace(".", "\u3002")

    assert_rejected(present(cluster, target, token.encode()), token)


def test_invalid_utf8_bytes(cluster: Cluster, target: str) -> None:
    token = real_token(cluster).encode() + b"\xff\xfe"

    assert_rejected(present(cluster, target, token), token)


NOT_JSON = [
    pytest.param(b"not json", id="text"),
    pytest.param(b"[]", id="array"),
    pytest.param(b'"RS256"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(b'{"alg":"RS256"', id="truncated object"),
    pytest.param(b'{"alg":"RS256"}garbage', id="trailing garbage"),
    pytest.param(b"\xef\xbb\xbf{}", id="byte order mark"),
    pytest.param('{"alg":"RS256"}'.encode("utf-16"), id="UTF-16"),
    pytest.param(b"\xff\xfe\xfd", id="invalid UTF-8"),
    pytest.param(b"", id="empty"),
]


@pytest.mark.parametrize("text", NOT_JSON)
def test_header_not_a_json_object(cluster: Cluster, target: str, text: bytes) -> None:
    token = signed_by_cluster(cluster, text, claims(cluster))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize("text", NOT_JSON)
def test_payload_not_a_json_object_under_a_valid_signature(
    cluster: Cluster, target: str, text: bytes
) -> None:
    token = signed_by_cluster(cluster, header(cluster), text)

    assert_rejected(present(cluster, target, token), token)


def test_payload_with_trailing_garbage_under_a_valid_signature(cluster: Cluster, target: str) -> None:
    text = json.dumps(claims(cluster)) + "garbage"
    token = signed_by_cluster(cluster, header(cluster), text)

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize("form", ["flattened", "general", "flattened, base64url-wrapped"])
def test_json_serialization(cluster: Cluster, target: str, form: str) -> None:
    # A JSON-serialized JWS (RFC 7515 section 7.2) of a token the real key signed.
    protected, payload, signature = real_token(cluster).split(".")
    flattened = {"protected": protected, "payload": payload, "signature": signature}
    general = {"payload": payload, "signatures": [{"protected": protected, "signature": signature}]}
    text = json.dumps(general if form == "general" else flattened, separators=(",", ":"))
    token = segment(text) if form.endswith("wrapped") else text

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "header_of",
    [
        pytest.param(
            lambda kid: f'{{"alg":"none","alg":"RS256","kid":"{kid}","typ":"at+jwt"}}',
            id="alg none then RS256",
        ),
        pytest.param(
            lambda kid: f'{{"alg":"RS256","alg":"none","kid":"{kid}","typ":"at+jwt"}}',
            id="alg RS256 then none",
        ),
        pytest.param(lambda kid: f'{{"alg":"RS256","kid":"x","kid":"{kid}","typ":"at+jwt"}}', id="two kid"),
        pytest.param(lambda kid: f'{{"alg":"RS256","kid":"{kid}","typ":"JWT","typ":"at+jwt"}}', id="two typ"),
    ],
)
def test_duplicate_header_members(cluster: Cluster, target: str, header_of: Callable[[str], str]) -> None:
    token = raw_signed(cluster, header_of(header(cluster)["kid"]), json.dumps(claims(cluster)))

    assert_rejected(present(cluster, target, token), token)


@pytest.mark.parametrize(
    "member",
    [
        pytest.param('"sub":"someone-else"', id="two sub"),
        pytest.param('"aud":"auth"', id="two aud"),
        pytest.param('"exp":4102444800', id="two exp"),
        pytest.param('"role":"admin"', id="two role"),
    ],
)
def test_duplicate_claims_under_a_valid_signature(cluster: Cluster, target: str, member: str) -> None:
    # Which one wins differs between parsers: the gateway could check one and orders read the other.
    text = json.dumps(claims(cluster), separators=(",", ":"))[:-1] + "," + member + "}"
    token = raw_signed(cluster, json.dumps(header(cluster)), text)

    assert_rejected(present(cluster, target, token), token)


def test_token_just_over_the_size_limit(cluster: Cluster, target: str) -> None:
    # Valid in every other way: only its length (padding in a claim) is wrong.
    token = signed_by_cluster(cluster, header(cluster), claims(cluster, scope="s " * 2000))
    assert 4096 < len(token) < 8192

    assert_rejected(present(cluster, target, token), token)


def test_huge_jose_header_under_the_header_budget(cluster: Cluster, target: str) -> None:
    token = signed_by_cluster(cluster, header(cluster, x="x" * 2500), claims(cluster))

    assert_rejected(present(cluster, target, token), token)


def test_huge_jose_header_over_the_header_budget(cluster: Cluster, target: str) -> None:
    token = signed_by_cluster(cluster, header(cluster, x="x" * 100_000), claims(cluster))

    assert_refused_quickly(cluster, target, token)


@pytest.mark.parametrize("part", ["header", "payload"])
def test_deeply_nested_json(cluster: Cluster, target: str, part: str) -> None:
    # Deeper than Python's recursion limit, yet under the size limit: a parser crash would be a 500.
    nested = '{"x":' + "[" * 1900 + "]" * 1900 + "}"
    if part == "header":
        token = raw_signed(cluster, nested, json.dumps(claims(cluster)))
    else:
        token = raw_signed(cluster, json.dumps(header(cluster)), nested)

    assert_rejected(present(cluster, target, token), token)


def test_ten_megabyte_token(cluster: Cluster, target: str) -> None:
    assert_refused_quickly(cluster, target, "A" * 10_000_000 + "." + real_token(cluster))


def assert_refused_quickly(cluster: Cluster, target: str, token: str) -> None:
    """Refused before any parsing: a 4xx, or the connection cut while we still send; never a hang."""
    try:
        response = http().get(target_url(cluster, target), headers={"Authorization": f"Bearer {token}"})
    except httpx.TimeoutException:
        raise AssertionError("the verifier hung on an oversized token") from None
    except httpx.TransportError:
        # uvicorn's HTTP parser gives up on a header section past its buffer and closes the
        # connection; a client still sending sees a reset instead of the answer.
        return
    # 400 is uvicorn's own plain-text "Invalid HTTP request received." for that same case.
    assert response.status_code in (400, 401, 413, 431), response.status_code
    assert_not_echoed(response, token)


def test_empty_bearer_token(cluster: Cluster, target: str) -> None:
    response = http().get(target_url(cluster, target), headers={"Authorization": "Bearer"})

    assert_rejected(response, "")


@pytest.mark.parametrize("place", ["query parameter", "cookie"])
def test_a_valid_token_outside_the_authorization_header_is_no_credential(
    cluster: Cluster, target: str, place: str
) -> None:
    # RFC 6750 allows ?access_token=, but URLs end up in logs and Referer headers: only the header counts.
    token = real_token(cluster)
    if place == "query parameter":
        response = http().get(target_url(cluster, target), params={"access_token": token})
    else:
        response = http().get(target_url(cluster, target), headers={"Cookie": f"access_token={token}"})

    assert response.status_code == 401, response.status_code
    assert response.headers.get("www-authenticate") == "Bearer"
    assert response.json()["error"] == "unauthenticated"
    assert_not_echoed(response, token)
