"""Operator accounts: create, change password or role, delete, and check a password in constant time.

Passwords are hashed at PASSWORD_COST (protocol/secrets.py), or at N=2^FLEET_PASSWORD_HASH_COST where that is set
(the tests lower it); a hash made at a lower cost is replaced on the next successful login."""

from __future__ import annotations

import re
import secrets

from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from fleet_service.auth.credentials import ROLES, dummy_password_hash
from fleet_service.auth.models import User, WebSession
from fleet_service.errors import Conflict, Invalid
from fleet_service.settings import password_hash_cost
from protocol.ids import now_ms
from protocol.secrets import PASSWORD_COST, Cost, hash_secret, needs_rehash, verify_secret

__all__ = [
    "UserError",
    "UserExists",
    "add_user",
    "check_password",
    "delete_user",
    "get_user",
    "password_cost",
    "set_password",
    "set_role",
]

USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024


class UserError(Invalid):
    """Bad username, password or role (a ValueError too, as the command line catches it)."""


class UserExists(Conflict, UserError):
    """The username is taken."""


def password_cost() -> Cost:
    """PASSWORD_COST, or N=2^FLEET_PASSWORD_HASH_COST (14 to 18) with PASSWORD_COST's r and p."""
    value = password_hash_cost()
    if not value:
        return PASSWORD_COST
    if not value.isdigit() or not 14 <= int(value) <= 18:
        raise ValueError(f"FLEET_PASSWORD_HASH_COST must be 14 to 18 (log2 of scrypt's N), not {value!r}")
    return Cost(2 ** int(value), PASSWORD_COST.r, PASSWORD_COST.p)


def hash_password(password: str) -> str:
    return hash_secret(password, password_cost())


def check_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME_RE.fullmatch(username):
        raise UserError("username: 1-64 letters, digits and _.@- (starting with a letter or digit)")
    return username


def check_new_password(password: str) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise UserError(f"password: {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"role must be one of {', '.join(ROLES)}")
    return role


def add_user(engine: Engine, username: str, password: str, role: str) -> User:
    check_username(username)
    check_new_password(password)
    _check_role(role)
    now = now_ms()
    user = User(
        id=secrets.token_hex(8),
        username=username,
        role=role,
        password_hash=hash_password(password),
        created_at=now,
        password_changed_at=now,
    )
    with Session(engine, expire_on_commit=False) as s:
        s.add(user)
        try:
            s.commit()
        except IntegrityError:
            raise UserExists(f"a user named {username!r} already exists") from None
    return user


def get_user(engine: Engine, username: str) -> User | None:
    with Session(engine, expire_on_commit=False) as s:
        return s.exec(select(User).where(User.username == username)).first()


def set_password(engine: Engine, username: str, password: str) -> bool:
    """Change a password and end every session of that user; False when there is no such user (or no longer is)."""
    check_new_password(password)
    password_hash = hash_password(password)  # the slow hash outside the transaction
    with Session(engine) as s:
        user_id = s.exec(select(User.id).where(User.username == username)).first()
        if user_id is None or not _changed(s, user_id, password_hash=password_hash, password_changed_at=now_ms()):
            return False
        s.exec(delete(WebSession).where(col(WebSession.user_id) == user_id))
        s.commit()
    return True


def set_role(engine: Engine, username: str, role: str) -> bool:
    """False when there is no such user (or no longer is)."""
    _check_role(role)
    with Session(engine) as s:
        user_id = s.exec(select(User.id).where(User.username == username)).first()
        if user_id is None or not _changed(s, user_id, role=role):
            return False
        s.commit()
    return True


def _changed(s: Session, user_id: str, **values: object) -> bool:
    """One UPDATE by id: a user deleted since it was read matches no row (False), instead of a stale ORM flush."""
    return s.exec(update(User).where(col(User.id) == user_id).values(**values)).rowcount == 1


def delete_user(engine: Engine, username: str) -> bool:
    with Session(engine) as s:
        user = s.exec(select(User).where(User.username == username)).first()
        if user is None:
            return False
        s.exec(delete(WebSession).where(col(WebSession.user_id) == user.id))
        s.delete(user)
        s.commit()
    return True


def check_password(engine: Engine, username: str, password: str) -> User | None:
    """The user when the password matches; the same slow hash runs whether or not the user exists.

    A matching hash made below the current cost is replaced by one at the current cost; sessions and
    `password_changed_at` stay as they are (the password did not change)."""
    user = get_user(engine, username) if isinstance(username, str) and len(username) <= 64 else None
    cost = password_cost()
    ok = verify_secret(password, user.password_hash if user else dummy_password_hash(cost))
    if not ok or user is None:
        return None
    if needs_rehash(user.password_hash, cost):
        _rehash(engine, user, password)
    return user


def _rehash(engine: Engine, user: User, password: str) -> None:
    old_hash, new_hash = user.password_hash, hash_password(password)
    with Session(engine) as s:
        # Only over the hash that was checked: a password changed (or a user deleted) meanwhile is left alone.
        changed = (
            s.exec(
                update(User)
                .where(col(User.id) == user.id, col(User.password_hash) == old_hash)
                .values(password_hash=new_hash)
            ).rowcount
            == 1
        )
        s.commit()
    if changed:
        user.password_hash = new_hash
