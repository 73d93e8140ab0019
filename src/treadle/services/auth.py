"""Registration, login, users and the token check used by every adapter."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from treadle.errors import ConflictError, PermissionDeniedError, UnauthenticatedError
from treadle.models import Tenant, User
from treadle.security import Actor, Role
from treadle.services.context import ServiceContext, owned_by
from treadle.services.views import AuthView, TenantView, UserView, parse_input

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


async def register(ctx: ServiceContext, data: object) -> AuthView:
    """Create a tenant and its first user (an ADMIN); return a token for that user."""
    args = parse_input(RegisterInput, data)
    limiter = ctx.resources.limiter
    await limiter.hit(limiter.limits.register_per_ip, "register-ip", ctx.client_ip or "-")
    tenant = Tenant(id=uuid.uuid4(), name=args.tenant_name)
    user = await _add_user(ctx, tenant.id, args.email, args.password, args.name, Role.ADMIN, tenant)
    return _auth_view(ctx, user, tenant)


async def login(ctx: ServiceContext, data: object) -> AuthView:
    """Check a password; an unknown email and a wrong password fail alike, in similar time."""
    args = parse_input(LoginInput, data)
    email = normalise_email(args.email)
    limiter = ctx.resources.limiter
    await limiter.hit(limiter.limits.login_per_ip, "login-ip", ctx.client_ip or "-")
    await limiter.hit(limiter.limits.login_per_email, "login-email", email)
    user = (await ctx.session.execute(select(User).where(User.email == email))).scalar_one_or_none()
    stored = user.password_hash if user else None
    if not await ctx.resources.hasher.verify(args.password, stored) or user is None:
        raise UnauthenticatedError(LOGIN_FAILED)
    if ctx.resources.hasher.needs_update(user.password_hash):
        user.password_hash = await ctx.resources.hasher.hash(args.password)
    tenant = await ctx.session.get_one(Tenant, user.tenant_id)
    return _auth_view(ctx, user, tenant)


async def create_user(ctx: ServiceContext, data: object) -> UserView:
    """Add a user to the caller's tenant (ADMIN only)."""
    actor = ctx.require_actor()
    if actor.role is not Role.ADMIN:
        raise PermissionDeniedError("only an ADMIN can create users")
    args = parse_input(CreateUserInput, data)
    user = await _add_user(ctx, actor.tenant_id, args.email, args.password, args.name, args.role)
    return UserView.of(user)


async def get_me(ctx: ServiceContext) -> UserView:
    """The calling user; a token whose user no longer exists is UNAUTHENTICATED."""
    actor = ctx.require_actor()
    stmt = owned_by(select(User).where(User.id == actor.user_id), User, actor)
    user = (await ctx.session.execute(stmt)).scalar_one_or_none()
    if user is None:
        raise UnauthenticatedError("invalid or expired token")
    return UserView.of(user)


async def _email_taken(ctx: ServiceContext, email: str) -> bool:
    # Checked before hashing, so a duplicate costs no argon2 work; the unique index still decides.
    stmt = select(func.count()).select_from(User).where(User.email == email)
    return bool((await ctx.session.execute(stmt)).scalar_one())


async def _add_user(
    ctx: ServiceContext,
    tenant_id: uuid.UUID,
    email: str,
    password: str,
    name: str,
    role: Role,
    tenant: Tenant | None = None,
) -> User:
    email = normalise_email(email)
    if await _email_taken(ctx, email):
        raise ConflictError("a user with this email already exists")
    user = User(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        email=email,
        name=name,
        role=role.value,
        password_hash=await ctx.resources.hasher.hash(password),
    )
    try:
        async with ctx.session.begin_nested():
            if tenant is not None:
                ctx.session.add(tenant)
                await ctx.session.flush()
            ctx.session.add(user)
            await ctx.session.flush()
    except IntegrityError as exc:
        raise ConflictError("a user with this email already exists") from exc
    return user


def _auth_view(ctx: ServiceContext, user: User, tenant: Tenant) -> AuthView:
    actor = Actor(user_id=user.id, tenant_id=tenant.id, role=Role(user.role))
    return AuthView(
        token=ctx.resources.tokens.issue(actor),
        user=UserView.of(user),
        tenant=TenantView.of(tenant),
    )


__all__ = ["create_user", "get_me", "login", "register"]
