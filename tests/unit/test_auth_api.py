"""Auth's endpoint types: each body is validated strictly by its type, and published from it."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from services.auth import api, domain, openapi
from services.auth.domain import Session, User
from shared.core import InvalidField, schema_ref, validate_as

ALICE = User(id="u-alice", email="alice@example.com", role="user", password_hash="$argon2id$secret")
GOOD_CHANGE = {"current_password": "old-password-1", "new_password": "a-new-password-123"}


def refused(body: dict[str, Any], type_: type[Any]) -> InvalidField:
    with pytest.raises(InvalidField) as caught:
        validate_as(body, type_)
    assert caught.value.status == 422
    assert caught.value.code == "validation_failed"
    return caught.value


class TestLogin:
    def test_email_is_normalized_and_the_password_kept_verbatim(self) -> None:
        credentials = validate_as(
            {"email": "  Alice@Example.COM ", "password": " pass word "}, api.LoginRequest
        )
        assert (credentials.email, credentials.password) == ("alice@example.com", " pass word ")

    @pytest.mark.parametrize("member", ["role", "remember", "Email"])
    def test_unknown_members_are_refused_by_name(self, member: str) -> None:
        error = refused({"email": "a@example.com", "password": "pw", member: True}, api.LoginRequest)
        assert error.field == member
        assert error.detail == f"unknown field {member!r}: send only email and password"

    @pytest.mark.parametrize(
        ("body", "field", "detail"),
        [
            ({}, "email", "email is required"),
            ({"email": "a@example.com"}, "password", "password is required"),
            ({"password": "pw"}, "email", "email is required"),
            ({"email": None, "password": "pw"}, "email", "email must be a string"),
            ({"email": ["a@example.com"], "password": "pw"}, "email", "email must be a string"),
            ({"email": "a@example.com", "password": 12345678901234}, "password", "password must be a string"),
            ({"email": {"$ne": ""}, "password": "pw"}, "email", "email must be a string"),
            ({"email": "a@example.com", "password": True}, "password", "password must be a string"),
        ],
    )
    def test_missing_or_non_string_members_are_named(
        self, body: dict[str, Any], field: str, detail: str
    ) -> None:
        error = refused(body, api.LoginRequest)
        assert (error.field, error.detail) == (field, detail)

    @pytest.mark.parametrize(
        ("body", "field", "detail"),
        [
            ({"email": "", "password": "pw"}, "email", "email must be 1 to 254 characters"),
            ({"email": "a@example.com", "password": ""}, "password", "password must be 1 to 1024 characters"),
            (
                {"email": "a" * 243 + "@example.com", "password": "pw"},
                "email",
                "email must be 1 to 254 characters",
            ),
            (
                {"email": "a@example.com", "password": "p" * 1025},
                "password",
                "password must be 1 to 1024 characters",
            ),
        ],
    )
    def test_empty_or_overlong_values_are_refused_naming_the_limits(
        self, body: dict[str, Any], field: str, detail: str
    ) -> None:
        error = refused(body, api.LoginRequest)
        assert (error.field, error.detail) == (field, detail)

    def test_the_longest_allowed_values_pass(self) -> None:
        email = "a" * 242 + "@example.com"
        assert len(email) == domain.MAX_EMAIL_LENGTH
        credentials = validate_as({"email": email, "password": "p" * 1024}, api.LoginRequest)
        assert (credentials.email, credentials.password) == (email, "p" * 1024)

    @pytest.mark.parametrize(("field", "value"), [("email", "\ud800@example.com"), ("password", "\udfff")])
    def test_a_lone_surrogate_is_refused(self, field: str, value: str) -> None:
        error = refused({"email": "a@example.com", "password": "pw", field: value}, api.LoginRequest)
        assert (error.field, error.detail) == (field, f"{field} must be valid Unicode text")


@pytest.mark.parametrize(
    ("change", "field", "detail"),
    [
        ({"new_password": "short"}, "new_password", "new_password must be 12 to 1024 characters"),
        ({"new_password": "n" * 1025}, "new_password", "new_password must be 12 to 1024 characters"),
        ({"new_password": None}, "new_password", "new_password is required"),
        ({"current_password": 1}, "current_password", "current_password must be a string"),
        ({"current_password": ""}, "current_password", "current_password must be 1 to 1024 characters"),
        ({"current_password": "\ud800"}, "current_password", "current_password must be valid Unicode text"),
        ({"new_password": "\ud800" * 12}, "new_password", "new_password must be valid Unicode text"),
        ({"role": "admin"}, "role", "unknown field 'role': send only current_password and new_password"),
        (
            {"current_password": "same-password-1", "new_password": "same-password-1"},
            "new_password",
            "the new password must differ from the current one",
        ),
    ],
)
def test_bad_password_changes_are_refused_naming_the_field(
    change: dict[str, Any], field: str, detail: str
) -> None:
    body = {key: value for key, value in {**GOOD_CHANGE, **change}.items() if value is not None}
    error = refused(body, api.PasswordChange)
    assert (error.field, error.detail) == (field, detail)


def test_a_good_password_change_is_accepted() -> None:
    change = validate_as(GOOD_CHANGE, api.PasswordChange)
    assert (change.current_password, change.new_password) == ("old-password-1", "a-new-password-123")


class TestMintRequest:
    def test_the_audience_is_read(self) -> None:
        assert validate_as({"audience": "orders"}, api.MintRequest).audience == "orders"

    def test_unknown_members_are_refused(self) -> None:
        error = refused({"audience": "orders", "scope": "admin"}, api.MintRequest)
        assert (error.field, error.detail) == ("scope", "unknown field 'scope': send only audience")

    @pytest.mark.parametrize("body", [{}, {"audience": None}, {"audience": ["orders"]}, {"audience": 1}])
    def test_a_missing_or_non_string_audience_is_refused(self, body: dict[str, Any]) -> None:
        assert refused(body, api.MintRequest).field == "audience"


class TestAnswers:
    def test_me_shows_the_session_times_in_whole_seconds(self) -> None:
        session = Session(
            handle="h" * 43,
            user_id=ALICE.id,
            created_at=1000.9,
            last_seen=2000.5,
            csrf_token="csrf",
            expires_at=3800.5,
        )
        assert msgspec.to_builtins(api.Me.of(session, ALICE)) == {
            "user": {"id": "u-alice", "email": "alice@example.com", "role": "user"},
            "csrf_token": "csrf",
            "session": {"created_at": 1000, "last_seen": 2000, "expires_at": 3800},
        }

    def test_the_public_user_carries_nothing_secret(self) -> None:
        encoded = msgspec.json.encode(api.PublicUser.of(ALICE))
        assert b"argon2" not in encoded
        assert msgspec.json.decode(encoded) == {"id": "u-alice", "email": "alice@example.com", "role": "user"}


class TestDocument:
    def test_each_body_the_routes_decode_is_published_from_its_type(self) -> None:
        document = openapi.build_openapi()
        bodies = {
            (method, path): operation["requestBody"]["content"]["application/json"]["schema"]
            for path, item in document["paths"].items()
            for method, operation in item.items()
            if "requestBody" in operation
        }
        assert bodies == {
            ("post", "/login"): schema_ref(api.LoginRequest),
            ("post", "/token"): schema_ref(api.MintRequest),
            ("post", "/password"): schema_ref(api.PasswordChange),
            ("post", "/native/login"): schema_ref(api.LoginRequest),
            ("post", "/native/token"): schema_ref(api.NativeMintRequest),
            ("post", "/native/logout"): schema_ref(api.NativeLogoutRequest),
        }
        for type_ in (api.LoginRequest, api.MintRequest, api.PasswordChange):
            assert document["components"]["schemas"][type_.__name__]["additionalProperties"] is False

    def test_the_published_limits_are_the_domains(self) -> None:
        schemas = openapi.build_openapi()["components"]["schemas"]
        email = schemas["LoginRequest"]["properties"]["email"]
        new_password = schemas["PasswordChange"]["properties"]["new_password"]
        assert (email["minLength"], email["maxLength"]) == (1, domain.MAX_EMAIL_LENGTH)
        assert (new_password["minLength"], new_password["maxLength"]) == (
            domain.MIN_PASSWORD_LENGTH,
            domain.MAX_PASSWORD_LENGTH,
        )
        assert schemas["PublicUser"]["properties"]["role"]["enum"] == list(domain.ROLES)

    def test_every_documented_refusal_of_an_operation_survives_its_guard(self) -> None:
        # An operation's own words for a status win over its guard's generic ones.
        responses = openapi.paths()["/password"]["post"]["responses"]
        assert "wrong_password" in responses["403"]["description"]
        assert {"400", "401", "403", "413", "415", "422", "429", "431"} <= set(responses)
        admin = openapi.paths()["/admin/users/{user_id}/disable"]["post"]["responses"]
        assert "not an admin" in admin["403"]["description"]
        assert set(admin) == {"204", "401", "403", "404", "431"}

    def test_the_schemas_gateway_merges_are_the_served_ones(self) -> None:
        assert {
            name: schema
            for name, schema in openapi.build_openapi()["components"]["schemas"].items()
            if name != "Error"
        } == openapi.SCHEMAS
