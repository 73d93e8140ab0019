"""Registration, login, users and the token check used by every adapter."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from treadle.errors import ConflictError, PermissionDeniedError, UnauthenticatedError
from treadle.models import Tenant, User
from treadle.security import Actor, Role
from treadle.services.context import ServiceContext, open_service_context, owned_by
from treadle.services.views import AuthView, TenantView, UserView, parse_input

if TYPE_CHECKING:
    from treadle.resources import Resources

Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
]
Password = Annotated[str, Field(min_length=8, max_length=256)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
LOGIN_FAILED = "invalid email or password"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RegisterInput(_Input):
    tenant_name: Name = Field(alias="tenantName")
    email: Email
    password: Password
    name: Name


class LoginInput(_Input):
    email: Annotated[str, StringConstraints(max_length=320)]
    password: Annotated[str, StringConstraints(max_length=256)]


class CreateUserInput(_Input):
    email: Email
    password: Password
    name: Name
    role: Role = Role.MEMBER


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def register(resources: Resources, data: object, *, client_ip: str | None) -> AuthView:
    """Create a tenant and its first user (an ADMIN); return a token for that user.

    Takes ``resources``, not a context: it opens its own short transactions, so the password
    is hashed (argon2, 64 MiB) with no pooled connection held.
    """
    args = parse_input(RegisterInput, data)
    limiter = resources.limiter
    await limiter.hit(limiter.limits.register_per_ip, "register-ip", client_ip or "-")
    tenant = Tenant(id=uuid.uuid4(), name=args.tenant_name)
    user = await _add_user(resources, None, tenant.id, args, Role.ADMIN, tenant)
    return _auth_view(resources, UserView.of(user), TenantView.of(tenant))


async def login(resources: Resources, data: object, *, client_ip: str | None) -> AuthView:
    """Check a password; an unknown email and a wrong password fail alike, in similar time.

    The user is read in one short transaction and the password verified with no connection
    held; an outdated hash is replaced in a second transaction.
    """
    args = parse_input(LoginInput, data)
    email = normalise_email(args.email)
    limiter = resources.limiter
    await limiter.hit(limiter.limits.login_per_ip, "login-ip", client_ip or "-")
    await limiter.hit(limiter.limits.login_per_email, "login-email", email)
    async with open_service_context(resources, None, client_ip=client_ip) as ctx:
        found = await ctx.session.execute(select(User).where(User.email == email))
        user = found.scalar_one_or_none()
        tenant = await ctx.session.get_one(Tenant, user.tenant_id) if user else None
    stored = user.password_hash if user else None
    verified = await resources.hasher.verify(args.password, stored)
    if not verified or user is None or tenant is None:
        raise UnauthenticatedError(LOGIN_FAILED)
    if resources.hasher.needs_update(user.password_hash):
        await _rehash(resources, user, await resources.hasher.hash(args.password))
    return _auth_view(resources, UserView.of(user), TenantView.of(tenant))


async def _rehash(resources: Resources, user: User, new_hash: str) -> None:
    # Only if the hash is still the one verified: a password changed meanwhile stays changed.
    stmt = (
        update(User)
        .where(User.id == user.id, User.password_hash == user.password_hash)
        .values(password_hash=new_hash)
    )
    async with open_service_context(resources, None) as ctx:
        await ctx.session.execute(stmt)


async def create_user(resources: Resources, actor: Actor, data: object) -> UserView:
    """Add a user to the caller's tenant (ADMIN only); hashes with no connection held."""
    async with open_service_context(resources, actor) as ctx:
        actor = ctx.require_actor()  # as the user is now: a demoted ADMIN is a MEMBER
    if actor.role is not Role.ADMIN:
        raise PermissionDeniedError("only an ADMIN can create users")
    args = parse_input(CreateUserInput, data)
    user = await _add_user(resources, actor, actor.tenant_id, args, args.role)
    return UserView.of(user)


async def get_me(ctx: ServiceContext) -> UserView:
    """The calling user; a token whose user no longer exists is UNAUTHENTICATED."""
    actor = ctx.require_actor()
    stmt = owned_by(select(User).where(User.id == actor.user_id), User, actor)
    user = (await ctx.session.execute(stmt)).scalar_one_or_none()
    if user is None:
        raise UnauthenticatedError("invalid or expired token")
    return UserView.of(user)


async def _email_taken(resources: Resources, email: str) -> bool:
    # Checked before hashing, so a duplicate costs no argon2 work; the unique index still decides.
    # Emails are unique across tenants: the count is not scoped to the caller's tenant.
    stmt = select(func.count()).select_from(User).where(User.email == email)
    async with open_service_context(resources, None) as ctx:
        return bool((await ctx.session.execute(stmt)).scalar_one())


async def _add_user(
    resources: Resources,
    actor: Actor | None,
    tenant_id: uuid.UUID,
    args: RegisterInput | CreateUserInput,
    role: Role,
    tenant: Tenant | None = None,
) -> User:
    email = normalise_email(args.email)
    if await _email_taken(resources, email):
        raise ConflictError("a user with this email already exists")
    user = User(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        email=email,
        name=args.name,
        role=role.value,
        password_hash=await resources.hasher.hash(args.password),  # no connection held
    )
    try:
        async with open_service_context(resources, actor) as ctx:
            if tenant is not None:
                ctx.session.add(tenant)
                await ctx.session.flush()
            ctx.session.add(user)
    except IntegrityError as exc:
        raise ConflictError("a user with this email already exists") from exc
    return user


def _auth_view(resources: Resources, user: UserView, tenant: TenantView) -> AuthView:
    actor = Actor(user_id=user.id, tenant_id=tenant.id, role=Role(user.role))
    return AuthView(token=resources.tokens.issue(actor), user=user, tenant=tenant)


__all__ = ["create_user", "get_me", "login", "register"]
