"""What the worker notes of the Pub/Sub message that brought an order, whatever shape it has."""

from __future__ import annotations

from datetime import datetime, timezone

from common.orders import Delivered
from functions.order_worker.claim import delivered

NOW = datetime(2026, 11, 23, 4, 30, tzinfo=timezone.utc)


def test_a_push_notes_its_message_id_and_publish_time_to_the_microsecond():
    push = {"messageId": "1234", "publishTime": "2026-11-23T04:29:59.123456789Z"}
    assert delivered(push, NOW) == Delivered("1234", datetime(2026, 11, 23, 4, 29, 59, 123456, tzinfo=timezone.utc))


def test_a_push_without_a_readable_publish_time_was_published_by_now():
    assert delivered({"messageId": "7", "publishTime": "yesterday"}, NOW) == Delivered("7", NOW)
    assert delivered({"message_id": "8"}, NOW) == Delivered("8", NOW)


def test_a_push_without_a_message_id_notes_nothing():
    assert delivered({"data": ""}, NOW) is None
