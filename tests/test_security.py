"""The pure trust-boundary rules: API keys, scopes, rate limits, the keyed log chain, epoch sizing."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings, strategies as st

from executor.runner import FeedAccess, LogFeed
from sequencer import limits
from sequencer.epochs import build_epoch
from sequencer.errors import ConfigError, Forbidden, Unauthenticated
from sequencer.security import (
    KeyRing,
    RateLimiter,
    Scope,
    SecretSource,
    check_may_read_account,
    check_may_submit_transfers,
    derive_key,
    load_cluster_secret,
    log_key,
    new_key,
    parse_ranges,
    raft_password,
    write_keys_file,
)
from sequencer.types import (
    AppliedEpoch,
    CODE_MAX,
    LEDGER_MAX,
    TIMEOUT_MS_MAX,
    TRANSFER_FLAGS_ALL,
    U63_MAX,
    CreateTransfer,
    encode_epoch,
    fold_log_digest,
    log_genesis_digest,
)


def _transfer(debit: int, ledger: int = 1, **kw) -> CreateTransfer:
    return CreateTransfer(kw.pop("id", 1), debit, kw.pop("credit", 9), kw.pop("amount", 5), ledger, 1, **kw)


# ------------------------------------------------------------------ API keys


def test_tokens_authenticate_and_are_stored_hashed(tmp_path) -> None:
    token, record = new_key(Scope.OPERATOR)
    path = tmp_path / "keys.json"
    write_keys_file(path, [record])
    assert token not in path.read_text()  # only the hash is stored
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    ring = KeyRing.load(path)
    assert ring.authenticate(f"Bearer {token}").id == record.id


@pytest.mark.parametrize("header, needle", [
    (None, "needs an API key"),
    ("", "needs an API key"),
    ("Basic dXNlcjpwYXNz", "must be 'Bearer <token>'"),
    ("Bearer", "must be 'Bearer <token>'"),
    ("Bearer not-an-ordo-key", "not an ordo API key"),
    ("Bearer ordo_" + "0" * 200, "not an ordo API key"),
])
def test_malformed_credentials_are_refused(header, needle) -> None:
    _, record = new_key(Scope.OPERATOR)
    with pytest.raises(Unauthenticated, match=needle):
        KeyRing([record]).authenticate(header)


def test_a_wrong_secret_with_a_real_key_id_is_refused() -> None:
    token, record = new_key(Scope.OPERATOR)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    ring = KeyRing([record])
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        ring.authenticate(f"Bearer {forged}")
    other_token, _ = new_key(Scope.OPERATOR)
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        ring.authenticate(f"Bearer {other_token}")


def test_keys_file_errors_are_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read the API keys file"):
        KeyRing.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"keys": [{"id": 1}]}')
    with pytest.raises(ConfigError, match="malformed"):
        KeyRing.load(bad)
    _, record = new_key(Scope.OPERATOR)
    with pytest.raises(ConfigError, match="appears twice"):
        KeyRing([record, record])


def test_client_keys_need_ledgers_and_ranges() -> None:
    with pytest.raises(ConfigError, match="at least one ledger"):
        new_key(Scope.CLIENT, ledgers=[1])
    with pytest.raises(ConfigError, match="client keys only"):
        new_key(Scope.OPERATOR, ledgers=[1])
    with pytest.raises(ConfigError, match="empty or out of range"):
        new_key(Scope.CLIENT, ledgers=[1], accounts=[(10, 5)])
    assert parse_ranges("1-9, 20") == [(1, 9), (20, 20)]
    with pytest.raises(ConfigError, match="FIRST-LAST"):
        parse_ranges("a-b")


# -------------------------------------------------------------------- scopes


CLIENT = new_key(Scope.CLIENT, ledgers=[1], accounts=[(100, 199)])[1]
OPERATOR = new_key(Scope.OPERATOR)[1]
REPLICA = new_key(Scope.REPLICA)[1]


def test_a_client_may_debit_only_its_own_accounts_on_its_ledgers() -> None:
    check_may_submit_transfers(CLIENT, [_transfer(150, credit=999)])  # paying out of its range is fine
    with pytest.raises(Forbidden, match="may not debit account 5") as exc:
        check_may_submit_transfers(CLIENT, [_transfer(150), _transfer(5, credit=150)])
    assert exc.value.field == "$[1].debit_account_id"
    with pytest.raises(Forbidden, match="may not use ledger 2"):
        check_may_submit_transfers(CLIENT, [_transfer(150, ledger=2)])
    with pytest.raises(Forbidden, match="must name the ledger"):
        check_may_submit_transfers(CLIENT, [_transfer(150, ledger=0)])
    # post and void are held to the same rule: the debit account of the pending.
    void = _transfer(5, pending_id=77, flags=8, amount=0)
    with pytest.raises(Forbidden, match="may not debit account 5"):
        check_may_submit_transfers(CLIENT, [void])
    check_may_submit_transfers(OPERATOR, [void, _transfer(5, ledger=0)])
    with pytest.raises(Forbidden, match="needs a key of scope operator or client"):
        check_may_submit_transfers(REPLICA, [_transfer(150)])


def test_reads_follow_the_same_ranges() -> None:
    check_may_read_account(CLIENT, 100)
    check_may_read_account(OPERATOR, 5)
    with pytest.raises(Forbidden, match="outside the key's account ranges"):
        check_may_read_account(CLIENT, 200)
    with pytest.raises(Forbidden, match="reading accounts needs"):
        check_may_read_account(REPLICA, 100)


# --------------------------------------------------------------- rate limits


def test_rate_limit_refills_at_its_rate_and_names_the_wait() -> None:
    key = new_key(Scope.CLIENT, ledgers=[1], accounts=[(1, 9)], rate_per_s=10, burst=20)[1]
    limiter = RateLimiter()
    assert limiter.take(key, 20, now_s=0.0) is None
    wait = limiter.take(key, 5, now_s=0.0)
    assert wait == pytest.approx(0.5)
    assert limiter.take(key, 5, now_s=0.5) is None
    # A request larger than the burst waits for a full bucket, never forever.
    assert limiter.take(key, 1000, now_s=0.5) == pytest.approx(2.0)
    assert limiter.take(key, 1000, now_s=2.5) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 50)), max_size=60))
def test_rate_limit_never_admits_more_than_burst_plus_rate_times_time(steps) -> None:
    key = new_key(Scope.CLIENT, ledgers=[1], accounts=[(1, 9)], rate_per_s=10, burst=20)[1]
    limiter, now, admitted = RateLimiter(), 0.0, 0
    for dt, cost in steps:
        now += dt
        if limiter.take(key, cost, now) is None:
            admitted += min(cost, 20)
    assert admitted <= 20 + 10 * now + 1e-6


# -------------------------------------------------------- cluster secret


def test_cluster_secret_sources(tmp_path, monkeypatch) -> None:
    path = tmp_path / "secret"
    path.write_text("ab" * 32 + "\n")
    assert load_cluster_secret(SecretSource(file=path)) == bytes.fromhex("ab" * 32)
    monkeypatch.setenv("ORDO_TEST_SECRET", "cd" * 32)
    assert load_cluster_secret(SecretSource(env="ORDO_TEST_SECRET")) == bytes.fromhex("cd" * 32)
    path.write_text("not hex")
    with pytest.raises(ConfigError, match="must be hex"):
        load_cluster_secret(SecretSource(file=path))
    path.write_text("abcd")
    with pytest.raises(ConfigError, match="at least 16"):
        load_cluster_secret(SecretSource(file=path))
    with pytest.raises(ConfigError, match="is empty"):
        load_cluster_secret(SecretSource(env="ORDO_TEST_UNSET_SECRET"))


def test_derived_keys_are_separate() -> None:
    secret = b"\x01" * 32
    assert derive_key(secret, "raft") != derive_key(secret, "log")
    assert raft_password(secret) != log_key(secret).hex()
    assert log_key(secret) != log_key(b"\x02" * 32)


# -------------------------------------------------------- keyed log chain


def _chain(key: bytes, count: int) -> list[AppliedEpoch]:
    entries, digest = [], log_genesis_digest(key)
    for number in range(1, count + 1):
        epoch = build_epoch([number << 16], [_transfer(100 + number, id=number)], [1])
        data = encode_epoch(msgspec.structs.replace(epoch, number=number))
        digest = fold_log_digest(key, digest, data)
        entries.append(AppliedEpoch(number, number << 16, digest, data))
    return entries


def test_the_feed_accepts_the_real_chain_and_refuses_a_forged_epoch() -> None:
    key = log_key(b"\x07" * 32)
    real = _chain(key, 4)
    feed = LogFeed(["http://127.0.0.1:1"], FeedAccess(key, "token"))
    feed.digest = log_genesis_digest(key)
    assert [e.number for e in feed.accept(real[:2], 1)] == [1, 2]
    # An attacker without the key builds epoch 3 with the unkeyed-SHA-256 fold of the old chain,
    # and with a fold under a key of its own: both are refused, and nothing after them is taken.
    forged_data = encode_epoch(msgspec.structs.replace(
        build_epoch([3 << 16], [_transfer(100, id=999, amount=10**6)], [1]), number=3))
    for attacker_key in (b"", log_key(b"\x08" * 32)):
        forged = AppliedEpoch(3, 3 << 16, fold_log_digest(attacker_key, feed.digest, forged_data), forged_data)
        assert feed.accept([forged, real[3]], 3) == []
    assert feed.refused == 2
    # The honest epoch 3 is still accepted afterwards: refusing never skips.
    assert [e.number for e in feed.accept(real[2:], 3)] == [3, 4]


def test_a_real_link_replayed_at_another_position_is_refused() -> None:
    key = log_key(b"\x07" * 32)
    real = _chain(key, 3)
    feed = LogFeed(["http://127.0.0.1:1"], FeedAccess(key, "token"))
    feed.digest = real[1].digest
    replayed = AppliedEpoch(3, real[0].hlc_last, real[0].digest, real[0].data)
    assert feed.accept([replayed], 3) == []


# ------------------------------------------------------------ epoch sizing


def test_the_worst_case_intent_is_measured_not_guessed() -> None:
    worst = CreateTransfer(U63_MAX, U63_MAX, U63_MAX, U63_MAX, LEDGER_MAX, CODE_MAX, TRANSFER_FLAGS_ALL, U63_MAX,
                           TIMEOUT_MS_MAX, U63_MAX)
    assert limits.INTENT_BYTES_MAX == len(msgspec.msgpack.encode(worst))
    # A full request of worst-case intents, stamped at the largest HLC, in its own
    # groups, encodes within the bound the config checks.
    n = limits.BATCH_EVENTS_MAX
    intents = [msgspec.structs.replace(worst, id=U63_MAX - i, debit_account_id=U63_MAX - 300 - 2 * i,
                                       credit_account_id=U63_MAX - 301 - 2 * i, pending_id=U63_MAX - 700 - i)
               for i in range(n)]
    # Not linked: every intent is its own dependency group, the most framing there can be.
    intents = [msgspec.structs.replace(t, flags=TRANSFER_FLAGS_ALL & ~1) for t in intents]
    epoch = build_epoch([2**64 - 1 - n + i for i in range(n)], intents, [n])
    assert len(epoch.groups) == n
    encoded = encode_epoch(msgspec.structs.replace(epoch, number=2**62))
    bound = limits.request_bytes_max(limits.BATCH_EVENTS_MAX) + limits.EPOCH_FRAME_BYTES_MAX
    assert len(encoded) <= bound
    used = limits.submission_bytes(len(msgspec.msgpack.encode(intents)), len(intents))
    assert len(encoded) <= used + limits.EPOCH_FRAME_BYTES_MAX
