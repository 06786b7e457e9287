"""The session record, the token reader, one-time login links and OAuth states.

The token reader runs on an in-memory secret store; the Firestore parts on the emulator.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from common.errors import TokenDead
from common.records import SYSTEM
from common.secrets import InMemorySecretStore
from common.session import (
    AUTH_EVENTS,
    AUTH_STATES,
    LOGIN_LINKS,
    SESSION_DOC,
    SessionStatus,
    SessionStore,
    TokenReader,
    Verdict,
    auth_event,
    consume_login_link,
    consume_state,
    create_state,
    mask_name,
    mint_login_link,
)

NOW = datetime(2026, 7, 14, 3, 37, tzinfo=timezone.utc)  # 09:07 IST


def jwt(exp: datetime, **claims: object) -> str:
    """A Fyers-shaped token: only the payload's ``exp`` matters to the router."""
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part({'exp': int(exp.timestamp()), **claims})}.c2ln"


class Ticker:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# --- TokenReader -------------------------------------------------------------------


def test_reader_returns_the_stored_token_and_caches_it_for_the_ttl():
    store = InMemorySecretStore({"FYERS_ACCESS_TOKEN": jwt(NOW + timedelta(hours=20), n=1)})
    ticker = Ticker()
    reader = TokenReader(store, ttl_seconds=60, wall_clock=lambda: NOW, monotonic=ticker)
    first = reader.get()
    store.put("FYERS_ACCESS_TOKEN", jwt(NOW + timedelta(hours=20), n=2))
    assert reader.get() == first  # within the TTL: the cached token
    ticker.t += 61
    assert reader.get() != first  # TTL passed: re-read


def test_invalidate_makes_the_next_read_see_a_fresh_login():
    store = InMemorySecretStore({"FYERS_ACCESS_TOKEN": jwt(NOW + timedelta(hours=20), n=1)})
    reader = TokenReader(store, ttl_seconds=600, wall_clock=lambda: NOW, monotonic=Ticker())
    reader.get()
    fresh = jwt(NOW + timedelta(hours=20), n=2)
    store.put("FYERS_ACCESS_TOKEN", fresh)
    reader.invalidate()
    assert reader.get() == fresh


def test_no_stored_token_means_the_session_is_dead():
    reader = TokenReader(InMemorySecretStore(), ttl_seconds=60, wall_clock=lambda: NOW)
    with pytest.raises(TokenDead) as exc:
        reader.get()
    assert exc.value.code == "NEEDS_LOGIN"


def test_a_token_past_its_jwt_expiry_is_dead_without_asking_fyers():
    expired = jwt(NOW - timedelta(minutes=1))
    reader = TokenReader(InMemorySecretStore({"FYERS_ACCESS_TOKEN": expired}), ttl_seconds=60,
                         wall_clock=lambda: NOW)
    with pytest.raises(TokenDead) as exc:
        reader.get()
    assert expired not in str(exc.value) and expired not in exc.value.message


def test_a_dead_token_is_not_kept_in_the_cache():
    store = InMemorySecretStore({"FYERS_ACCESS_TOKEN": jwt(NOW - timedelta(minutes=1))})
    reader = TokenReader(store, ttl_seconds=600, wall_clock=lambda: NOW, monotonic=Ticker())
    with pytest.raises(TokenDead):
        reader.get()
    fresh = jwt(NOW + timedelta(hours=20))
    store.put("FYERS_ACCESS_TOKEN", fresh)
    assert reader.get() == fresh  # no TTL wait after a login


def test_a_token_without_a_readable_expiry_is_passed_on_for_fyers_to_judge():
    reader = TokenReader(InMemorySecretStore({"FYERS_ACCESS_TOKEN": "opaque"}), ttl_seconds=60,
                         wall_clock=lambda: NOW)
    assert reader.get() == "opaque"


def test_names_are_masked_to_initials():
    assert mask_name("SIM TRADER") == "S** T*****"
    assert mask_name("") is None and mask_name(None) is None


# --- the Firestore parts -----------------------------------------------------------


@pytest.fixture
def db(firestore_db):
    firestore_db.collection(SYSTEM).document(SESSION_DOC).delete()
    return firestore_db


@pytest.fixture
def sessions(db):
    return SessionStore(db, timeout=10)


def test_a_missing_session_record_reads_as_unknown(sessions):
    assert sessions.get().status == SessionStatus.UNKNOWN


def test_login_then_needs_login_keeps_who_was_logged_in(sessions):
    expires = datetime(2026, 7, 15, 0, 30, tzinfo=timezone.utc)
    sessions.mark_authenticated(fy_id="XY12345", name="SIM TRADER", expires_at=expires, now=NOW)
    record = sessions.get()
    assert (record.status, record.fy_id, record.name, record.expires_at) == (
        SessionStatus.AUTHENTICATED, "XY12345", "S** T*****", expires)
    later = NOW + timedelta(hours=21)
    sessions.mark_needs_login("EXPIRED", "The token expired.", later)
    record = sessions.get()
    assert (record.status, record.reason, record.fy_id, record.checked_at) == (
        SessionStatus.NEEDS_LOGIN, "EXPIRED", "XY12345", later)


def test_a_check_clears_the_last_refusal(sessions):
    sessions.mark_needs_login("TOKEN_REJECTED", "-8", NOW)
    sessions.mark_checked(now=NOW + timedelta(minutes=5), fy_id="XY12345")
    record = sessions.get()
    assert (record.status, record.reason, record.message, record.fy_id) == (
        SessionStatus.AUTHENTICATED, None, None, "XY12345")


def test_login_notices_go_out_at_most_once_per_interval_while_the_link_lives(sessions):
    hour, link_ttl = timedelta(hours=1), timedelta(hours=4)
    assert sessions.claim_login_notice(now=NOW, link_expires_at=NOW + link_ttl, every=hour)
    soon = NOW + timedelta(minutes=30)
    assert not sessions.claim_login_notice(now=soon, link_expires_at=soon + link_ttl, every=hour)
    later = NOW + timedelta(minutes=61)
    assert sessions.claim_login_notice(now=later, link_expires_at=later + link_ttl, every=hour)
    assert sessions.get().login_link_expires_at == later + link_ttl


def test_a_notice_whose_link_expired_is_repeated_at_once(sessions):
    hour = timedelta(hours=1)
    assert sessions.claim_login_notice(now=NOW, link_expires_at=NOW + timedelta(minutes=5), every=hour)
    soon = NOW + timedelta(minutes=10)
    assert sessions.claim_login_notice(now=soon, link_expires_at=soon + timedelta(hours=4), every=hour)


def test_a_released_notice_can_be_claimed_again(sessions):
    hour = timedelta(hours=1)
    assert sessions.claim_login_notice(now=NOW, link_expires_at=NOW + hour * 4, every=hour)
    sessions.release_login_notice(NOW)
    assert sessions.claim_login_notice(now=NOW, link_expires_at=NOW + hour * 4, every=hour)


def test_two_concurrent_claims_send_one_notice(sessions):
    results: list[bool] = []
    barrier = threading.Barrier(2)

    def claim() -> None:
        barrier.wait()
        results.append(sessions.claim_login_notice(now=NOW, link_expires_at=NOW + timedelta(hours=4),
                                                   every=timedelta(hours=1)))

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]


def test_audit_events_carry_a_ttl(sessions, db):
    sessions.record_event(auth_event("login_refused", "refused", NOW, reason="BAD_OPERATOR_KEY", source_ip="1.2.3.4"))
    docs = [d.to_dict() for d in db.collection(AUTH_EVENTS).where(filter=FieldFilter("at", "==", NOW)).stream()]
    assert any(d["reason"] == "BAD_OPERATOR_KEY" and d["expire_at"] == NOW + timedelta(days=30) for d in docs)


def test_a_login_link_works_once(db):
    link = mint_login_link(db, NOW, timedelta(hours=4))
    assert consume_login_link(db, link.token, NOW + timedelta(minutes=1)) == Verdict.OK
    assert consume_login_link(db, link.token, NOW + timedelta(minutes=2)) == Verdict.USED


def test_a_login_link_is_stored_only_as_its_hash(db):
    link = mint_login_link(db, NOW, timedelta(hours=4))
    assert not db.collection(LOGIN_LINKS).document(link.token).get().exists
    stored = db.collection(LOGIN_LINKS).document(hashlib.sha256(link.token.encode()).hexdigest()).get()
    assert stored.exists and link.token not in json.dumps(stored.to_dict(), default=str)
    assert stored.to_dict()["expire_at"] == NOW + timedelta(hours=4) == link.expires_at


def test_an_expired_login_link_is_refused_even_before_ttl_deletion(db):
    link = mint_login_link(db, NOW, timedelta(hours=4))
    assert consume_login_link(db, link.token, NOW + timedelta(hours=4)) == Verdict.EXPIRED


def test_an_unknown_login_link_is_refused(db):
    assert consume_login_link(db, "never-issued", NOW) == Verdict.UNKNOWN
    assert consume_login_link(db, "", NOW) == Verdict.UNKNOWN


def test_concurrent_uses_of_one_link_let_exactly_one_through(db):
    link = mint_login_link(db, NOW, timedelta(hours=4))
    verdicts: list[Verdict] = []
    barrier = threading.Barrier(3)

    def use() -> None:
        barrier.wait()
        verdicts.append(consume_login_link(db, link.token, NOW))

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(verdicts) == [Verdict.OK, Verdict.USED, Verdict.USED]


def test_a_state_works_once_within_ten_minutes(db):
    state = create_state(db, NOW)
    assert db.collection(AUTH_STATES).document(state).get().exists
    assert consume_state(db, state, NOW + timedelta(minutes=9)) == Verdict.OK
    assert consume_state(db, state, NOW + timedelta(minutes=9)) == Verdict.USED


def test_a_late_state_is_expired(db):
    state = create_state(db, NOW)
    assert consume_state(db, state, NOW + timedelta(minutes=10)) == Verdict.EXPIRED


@pytest.mark.parametrize("forged", ["", "nope", "a/b", "../system/broker_session", "x" * 101])
def test_a_forged_state_is_unknown(db, forged):
    assert consume_state(db, forged, NOW) == Verdict.UNKNOWN
