"""Registration, login, users and token checks over REST and GraphQL."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest

from tests.conftest import TEST_SECRET
from tests.e2e.conftest import PASSWORD, Account, register
from tests.support.client import Api, ApiError, unique_email


def test_register_returns_admin_token_user_and_tenant(api: Api) -> None:
    email = unique_email("reg")
    body = api.register("Initech", email.upper(), PASSWORD, "Peter")
    assert body["user"]["email"] == email  # normalised to lower case
    assert body["user"]["role"] == "ADMIN"
    assert body["user"]["tenantId"] == body["tenant"]["id"]
    assert body["tenant"]["name"] == "Initech"
    assert "password" not in str(body["user"]).lower()
    assert api.me(body["token"]) == body["user"]


def test_login_with_any_case_email(api: Api, alice: Account) -> None:
    body = api.login(alice.email.upper(), PASSWORD)
    assert body["user"]["id"] == alice.user["id"]
    assert api.me(body["token"])["email"] == alice.email


def test_wrong_password_and_unknown_email_fail_alike(api: Api, alice: Account) -> None:
    with pytest.raises(ApiError) as wrong:
        api.login(alice.email, "not the password")
    with pytest.raises(ApiError) as unknown:
        api.login(unique_email("ghost"), "not the password")
    assert wrong.value.code == unknown.value.code == "UNAUTHENTICATED"
    assert wrong.value.message == unknown.value.message
    assert wrong.value.status == unknown.value.status


def test_duplicate_email_is_conflict_across_tenants(api: Api, alice: Account) -> None:
    with pytest.raises(ApiError) as err:
        api.register("Other", alice.email.upper(), PASSWORD, "Dup")
    assert err.value.code == "CONFLICT"


@pytest.mark.parametrize(
    ("field", "value"),
    [("password", "short"), ("password", "x" * 257), ("email", "not-an-email"), ("name", "")],
)
def test_register_validation(api: Api, field: str, value: str) -> None:
    body = {"tenant": "T", "email": unique_email("v"), "password": PASSWORD, "name": "N"}
    body[field] = value
    with pytest.raises(ApiError) as err:
        api.register(body["tenant"], body["email"], body["password"], body["name"])
    assert err.value.code == "VALIDATION_ERROR"
    assert field in err.value.message


def test_admin_creates_member_who_cannot_create_users(api: Api, alice: Account) -> None:
    email = unique_email("member")
    member = api.create_user(alice.token, email=email, password=PASSWORD, name="Mem", role="MEMBER")
    assert member["tenantId"] == alice.tenant["id"]
    assert member["role"] == "MEMBER"
    token = api.login(email, PASSWORD)["token"]
    with pytest.raises(ApiError) as err:
        api.create_user(token, email=unique_email("x"), password=PASSWORD, name="X", role="ADMIN")
    assert err.value.code == "FORBIDDEN"


def _forge(claims: dict[str, object], key: str = TEST_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=alg)


def _claims(account: Account, **override: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": account.user["id"],
        "tid": account.tenant["id"],
        "role": "ADMIN",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(override)
    return claims


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _alg_none(account: Account) -> str:
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(account))}."


def _rs256_header(account: Account) -> str:
    """HS/RS confusion: an RS256 header over an HMAC made with the server's own secret."""
    signing_input = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(_claims(account))}"
    mac = hmac.new(TEST_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


BAD_TOKENS = {
    "garbage": lambda a: "not-a-token",
    "alg-none": _alg_none,
    "rs256-confusion": _rs256_header,
    "other-secret": lambda a: _forge(_claims(a), key="another-secret-" + "y" * 40),
    "expired": lambda a: _forge(
        _claims(a, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    ),
    "no-exp": lambda a: _forge({k: v for k, v in _claims(a).items() if k != "exp"}),
    "no-tid": lambda a: _forge({k: v for k, v in _claims(a).items() if k != "tid"}),
    "hs512": lambda a: _forge(_claims(a), key=TEST_SECRET * 2, alg="HS512"),
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
def test_bad_tokens_are_unauthenticated(api: Api, alice: Account, kind: str) -> None:
    token = BAD_TOKENS[kind](alice)
    with pytest.raises(ApiError) as err:
        api.me(token)
    assert err.value.code == "UNAUTHENTICATED"
    if api.kind == "rest":
        assert err.value.status == 401


def test_missing_token_is_unauthenticated(api: Api) -> None:
    with pytest.raises(ApiError) as err:
        api.me(None)
    assert err.value.code == "UNAUTHENTICATED"


def test_forged_role_claim_needs_the_secret(api: Api, alice: Account) -> None:
    email = unique_email("m")
    api.create_user(alice.token, email=email, password=PASSWORD, name="M", role="MEMBER")
    member = register(api, "Solo")
    # A valid token carries only what the server signed; editing the role breaks the signature.
    header, payload, signature = member.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "ADMIN"
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(ApiError) as err:
        api.me(f"{header}.{edited}.{signature}")
    assert err.value.code == "UNAUTHENTICATED"
