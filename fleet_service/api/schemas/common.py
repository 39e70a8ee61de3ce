"""Shapes shared by the domains: the strict base model and the page of a list endpoint."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

__all__ = ["Items", "Page", "Public"]

T = TypeVar("T")


class Public(BaseModel):
    """A response body: exactly the keys declared, in this order."""

    model_config = ConfigDict(extra="forbid")


class Items(Public, Generic[T]):
    """A whole list (small ones: users, tokens, claim tokens)."""

    items: list[T]


class Page(Public, Generic[T]):
    """One page of a list: `limit` items from `offset` on, of `total` matching."""

    items: list[T]
    total: int
    limit: int
    offset: int
