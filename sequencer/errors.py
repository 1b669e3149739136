"""Exceptions shared by every role.

Role: shared by every core and driver.

Owned here so that the sequencer, the executor and the proxies raise the same
types, and the API can map each one to a stable RFC 9457 problem `type`.
"""

from __future__ import annotations


class OrdoError(Exception):
    """Base of every error ordo raises on purpose."""


class InvariantViolation(OrdoError):
    """A property from DESIGN.md "What must hold" was found broken.

    Raised instead of `assert`, which `python -O` strips: these checks stay on
    in production, because a silent inconsistency costs more than a crash.
    """


class ClockOffsetError(OrdoError):
    """A remote HLC timestamp is further ahead than `max_offset_ms` allows."""


class ValidationError(OrdoError):
    """A request is malformed: wrong shape, wrong type, or out of range.

    `field` names the offending JSON path so the client knows what to fix.
    """

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class ConfigError(OrdoError):
    """The configuration is inconsistent (for example a directory gap)."""


class NotLeaderError(OrdoError):
    """This replica is not the Raft leader; `leader` is where to go instead."""

    def __init__(self, leader: str | None, members: list[str]) -> None:
        super().__init__(f"not the leader; leader is {leader or 'unknown (election in progress)'}")
        self.leader = leader
        self.members = members


class StoreUnavailable(OrdoError):
    """A shard's store did not answer; the caller retries with backoff."""


class _RequestError(OrdoError):
    """A request refused at the edge; `field` names what to fix (a JSON path or a header)."""

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class Unauthenticated(_RequestError):
    """No credential, or one that is not a valid API key (HTTP 401)."""

    def __init__(self, detail: str, field: str | None = "Authorization") -> None:
        super().__init__(detail, field)


class Forbidden(_RequestError):
    """A valid API key asked for something outside its scope (HTTP 403)."""


class TooLarge(_RequestError):
    """A request that can never fit one epoch (HTTP 413)."""


class UnsupportedMedia(_RequestError):
    """A body that is not plain JSON: wrong Content-Type, or any Content-Encoding (HTTP 415)."""


class BodyTimeout(_RequestError):
    """The request body did not arrive within the body deadline (HTTP 408)."""


class RateLimited(OrdoError):
    """The API key spent its rate; retry after `retry_after_s` (HTTP 429)."""

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class Overloaded(OrdoError):
    """The sequencer's queue is full; retry after a delay (HTTP 429)."""
