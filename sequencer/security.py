"""The trust boundary: the cluster secret, API keys, scopes and rate limits.

Role: pure core of the trust boundary; driven by `api.py` and `tools/cli.py`.

Owned here, and pure: what a credential is, how it is checked, what each
scope may do, and the per-key token buckets.  Nothing here reads the clock
or a socket; the API (`sequencer/api.py`) is the edge that passes in the
`Authorization` header, the decoded request and the time.  The files are
read once, at start, by `load_secret` and `KeyRing.load`.

Two kinds of secret, never in the config text itself (the config names a
file or an environment variable):

* The **cluster secret** (32 random bytes, hex in its file).  Every replica
  and executor holds it.  Two keys are derived from it: pysyncobj's
  `password`, which authenticates and encrypts every Raft message (Fernet:
  AES-CBC + HMAC-SHA256, checked before pysyncobj unpickles anything), and
  the log key, which keys the digest chain of the log (HMAC-SHA256), so
  that only a holder of the secret can extend a chain an executor accepts.
* **API keys**, one per client.  A token is `ordo_<id>_<secret>`; the keys
  file stores only its SHA-256.  Tokens carry 256 bits of randomness, so a
  fast hash is enough (a slow KDF protects low-entropy passwords, which
  these are not), and lookup is by the public `<id>` with a constant-time
  comparison of the hash.

Scopes: `operator` (every ledger; creates accounts), `client` (named
ledgers and account ranges, for reads and writes), `replica` (the log feed,
for executors and `ordo verify`).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from sequencer.errors import ConfigError, Forbidden, Unauthenticated

#: Bytes of randomness in the cluster secret and in every API key's secret.
SECRET_BYTES = 32
#: A token is "ordo_" + 12 hex (the public key id) + "_" + 43 url-safe chars.
TOKEN_PREFIX = "ordo_"
KEY_ID_HEX = 12
#: Longest Authorization header value looked at.  A real token is 61 chars;
#: anything much longer is refused before any hashing is done.
TOKEN_CHARS_MAX = 128


class Scope(enum.StrEnum):
    OPERATOR = "operator"
    CLIENT = "client"
    REPLICA = "replica"


#: Default rate limits per scope, in events per second (a request costs its
#: number of events, a read costs 1) and the burst a bucket holds.  A client
#: key's 5,000/s is about half of what the whole cluster applies on 2 cores
#: (README, Performance): one client cannot starve every other.  Operators
#: and replicas are trusted parties, limited only far above the cluster's
#: capacity, so that a runaway script still meets a ceiling.
DEFAULT_RATES = {
    Scope.OPERATOR: (200_000.0, 400_000),
    Scope.CLIENT: (5_000.0, 10_000),
    Scope.REPLICA: (2_000.0, 4_000),
}


class ApiKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One API key as stored: never the token, only its SHA-256."""

    id: str
    sha256: str
    scope: Scope
    #: Client keys: the ledgers they may touch (empty: none).
    ledgers: list[int] = []
    #: Client keys: inclusive account id ranges they may read and debit.
    accounts: list[tuple[int, int]] = []
    rate_per_s: float | None = None
    burst: int | None = None
    label: str = ""

    def rate(self) -> tuple[float, int]:
        default_rate, default_burst = DEFAULT_RATES[self.scope]
        return (self.rate_per_s or default_rate, self.burst or default_burst)

    # -- what this key may do (pure) -------------------------------------

    def covers_account(self, account_id: int) -> bool:
        if self.scope is Scope.OPERATOR:
            return True
        if self.scope is not Scope.CLIENT:
            return False
        return any(first <= account_id <= last for first, last in self.accounts)

    def covers_ledger(self, ledger: int) -> bool:
        if self.scope is Scope.OPERATOR:
            return True
        return self.scope is Scope.CLIENT and ledger in self.ledgers


class KeysFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    keys: list[ApiKey]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_key(
    scope: Scope,
    ledgers: Sequence[int] = (),
    accounts: Sequence[tuple[int, int]] = (),
    rate_per_s: float | None = None,
    burst: int | None = None,
    label: str = "",
) -> tuple[str, ApiKey]:
    """A fresh key: the token (shown once, to its holder) and the record to store."""
    key_id = secrets.token_hex(KEY_ID_HEX // 2)
    token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(SECRET_BYTES)}"
    record = ApiKey(key_id, hash_token(token), Scope(scope), list(ledgers), [tuple(r) for r in accounts],
                    rate_per_s, burst, label)
    _check_key(record)
    return token, record


def _check_key(key: ApiKey) -> None:
    if len(key.id) != KEY_ID_HEX or any(c not in "0123456789abcdef" for c in key.id):
        raise ConfigError(f"API key id {key.id!r} must be {KEY_ID_HEX} lower-case hex digits")
    if len(key.sha256) != 64:
        raise ConfigError(f"API key {key.id}: sha256 must be 64 hex digits")
    if key.scope is Scope.CLIENT and not (key.ledgers and key.accounts):
        raise ConfigError(f"client key {key.id} must name at least one ledger and one account range")
    if key.scope is not Scope.CLIENT and (key.ledgers or key.accounts):
        raise ConfigError(f"{key.scope} key {key.id}: ledgers and accounts apply to client keys only")
    for first, last in key.accounts:
        if not 1 <= first <= last < 2**63:
            raise ConfigError(f"client key {key.id}: account range {first}..{last} is empty or out of range")
    if key.rate_per_s is not None and not key.rate_per_s > 0:
        raise ConfigError(f"API key {key.id}: rate_per_s must be positive")
    if key.burst is not None and key.burst < 1:
        raise ConfigError(f"API key {key.id}: burst must be at least 1")


class KeyRing:
    """The API keys a node accepts, by key id."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys: dict[str, ApiKey] = {}
        for key in keys:
            _check_key(key)
            if key.id in self.keys:
                raise ConfigError(f"API key id {key.id} appears twice")
            self.keys[key.id] = key

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        try:
            data = msgspec.json.decode(Path(path).read_bytes(), type=KeysFile)
        except OSError as exc:
            raise ConfigError(f"cannot read the API keys file {path}: {exc.strerror}") from None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"the API keys file {path} is malformed: {exc}") from None
        return cls(data.keys)

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The key behind an `Authorization: Bearer <token>` header, or Unauthenticated."""
        if not authorization:
            raise Unauthenticated("this request needs an API key: send 'Authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        token = token.strip()
        if len(token) > TOKEN_CHARS_MAX or not token.startswith(TOKEN_PREFIX):
            raise Unauthenticated("the bearer token is not an ordo API key (they start with 'ordo_')")
        key_id = token[len(TOKEN_PREFIX):len(TOKEN_PREFIX) + KEY_ID_HEX]
        key = self.keys.get(key_id)
        # Hash and compare even for an unknown id, so timing says nothing about which ids exist.
        expected = key.sha256 if key is not None else "0" * 64
        if not hmac.compare_digest(hash_token(token), expected) or key is None:
            raise Unauthenticated("the API key is unknown or revoked")
        return key


def write_keys_file(path: Path, keys: Iterable[ApiKey]) -> None:
    path.write_bytes(msgspec.json.format(msgspec.json.encode(KeysFile(list(keys)))))
    path.chmod(0o600)


def write_secret(path: Path, value: str) -> None:
    """Write a secret readable by its owner only (created 0600, never world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")


# ------------------------------------------------------------- cluster secret


@dataclass(frozen=True)
class SecretSource:
    """Where a secret comes from: a file or an environment variable, never the config text."""

    file: Path | None = None
    env: str | None = None

    @property
    def configured(self) -> bool:
        return self.file is not None or self.env is not None

    def describe(self) -> str:
        return f"file {self.file}" if self.file is not None else f"environment variable {self.env}"

    def read(self) -> str:
        if self.file is not None:
            try:
                value = self.file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read the secret file {self.file}: {exc.strerror}") from None
        elif self.env is not None:
            value = os.environ.get(self.env, "").strip()
        else:
            raise ConfigError("no secret source is configured")
        if not value:
            raise ConfigError(f"the secret in {self.describe()} is empty")
        return value


def load_cluster_secret(source: SecretSource) -> bytes:
    value = source.read()
    try:
        secret = bytes.fromhex(value)
    except ValueError:
        raise ConfigError(f"the cluster secret in {source.describe()} must be hex "
                          f"(make one with: python -c 'import secrets; print(secrets.token_hex(32))')") from None
    if len(secret) < SECRET_BYTES // 2:
        raise ConfigError(f"the cluster secret in {source.describe()} has {len(secret)} bytes; use at least "
                          f"{SECRET_BYTES // 2} (32 hex digits), {SECRET_BYTES} recommended")
    return secret


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A separate key per use of the cluster secret, so one leaking use does not expose the other."""
    return hmac.new(secret, b"ordo/key/v1/" + purpose.encode(), hashlib.sha256).digest()


def raft_password(secret: bytes) -> str:
    return derive_key(secret, "raft").hex()


def log_key(secret: bytes | None) -> bytes:
    """The key of the log digest chain.  Without a cluster secret (loopback-only
    development clusters) the chain is keyed with a public constant and so
    proves integrity against accidents, not against an attacker."""
    return derive_key(secret, "log") if secret is not None else b"ordo/log/unkeyed"


# --------------------------------------------------------------- rate limits


@dataclass
class _Bucket:
    tokens: float
    at_s: float


@dataclass
class RateLimiter:
    """Token buckets per API key (pure: the caller passes the time).

    `take` answers None when the key may go ahead, or the seconds to wait
    (for `Retry-After`).  A request costs its event count, so a 128-event
    batch and 128 single-event requests cost the same.
    """

    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: ApiKey, cost: int, now_s: float) -> float | None:
        rate, burst = key.rate()
        bucket = self.buckets.get(key.id)
        if bucket is None:
            bucket = self.buckets[key.id] = _Bucket(float(burst), now_s)
        bucket.tokens = min(float(burst), bucket.tokens + max(0.0, now_s - bucket.at_s) * rate)
        bucket.at_s = max(bucket.at_s, now_s)
        cost = min(cost, burst)  # a request larger than the burst waits for a full bucket, never forever
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return None
        return (cost - bucket.tokens) / rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


# -------------------------------------------------------- what a key may do


def require_scope(key: ApiKey, *allowed: Scope, what: str) -> None:
    if key.scope not in allowed:
        names = " or ".join(s.value for s in allowed)
        raise Forbidden(f"{what} needs a key of scope {names}; this one ({key.id}) has scope {key.scope}",
                        field="Authorization")


def check_may_read_account(key: ApiKey, account_id: int, field_name: str = "id") -> None:
    require_scope(key, Scope.OPERATOR, Scope.CLIENT, what="reading accounts")
    if not key.covers_account(account_id):
        raise Forbidden(f"API key {key.id} may not read account {account_id}: it is outside the key's account ranges",
                        field=field_name)


def check_may_see_ledger(key: ApiKey, account_id: int, ledger: int, field_name: str = "id") -> None:
    if not key.covers_ledger(ledger):
        raise Forbidden(f"API key {key.id} may not read account {account_id}: its ledger {ledger} is not one of "
                        f"the key's ledgers", field=field_name)


def check_may_submit_transfers(key: ApiKey, transfers: Sequence) -> None:
    """Every transfer must debit an account the key covers, on a ledger it covers.

    Client keys must name the ledger (not 0).  The state machine then refuses
    a transfer whose ledger differs from its accounts' (`ledger_mismatch`) or
    from the pending transfer it posts or voids, so "the debit account is in
    the key's ranges and the transfer's ledger is one of the key's" means
    "the key may debit that account", decided without reading state.
    """
    require_scope(key, Scope.OPERATOR, Scope.CLIENT, what="submitting transfers")
    if key.scope is Scope.OPERATOR:
        return
    for i, t in enumerate(transfers):
        if not key.covers_account(t.debit_account_id):
            raise Forbidden(f"transfers[{i}]: API key {key.id} may not debit account {t.debit_account_id}",
                            field=f"$[{i}].debit_account_id")
        if t.ledger == 0:
            raise Forbidden(f"transfers[{i}]: a client key must name the ledger (0 means 'as the pending "
                            f"transfer', which only an operator key may use)", field=f"$[{i}].ledger")
        if not key.covers_ledger(t.ledger):
            raise Forbidden(f"transfers[{i}]: API key {key.id} may not use ledger {t.ledger}",
                            field=f"$[{i}].ledger")


def parse_ranges(text: str) -> list[tuple[int, int]]:
    """'1-999,5000-5999' -> [(1, 999), (5000, 5999)], for `ordo keys create --accounts`."""
    out = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, sep, last = part.partition("-")
        try:
            out.append((int(first), int(last if sep else first)))
        except ValueError:
            raise ConfigError(f"account range {part!r} must be FIRST-LAST with integer ids") from None
    return out
