"""Record ids: UUIDv7 written as 32 hex digits, ordered by time, with a random short form at the end."""

from __future__ import annotations

import time
import uuid

from memory_store.ids import SHORT_ID_DIGITS, like_escape, new_id, short_id


def test_new_ids_are_version_7_uuids_in_the_rfc_layout():
    for _ in range(1000):
        value = uuid.UUID(hex=new_id())
        assert value.version == 7 and value.variant == uuid.RFC_4122
    one = new_id()
    assert len(one) == 32 and one == one.lower()


def test_new_ids_begin_with_the_time_so_later_ids_sort_after_earlier_ones():
    before = time.time_ns() // 1_000_000
    first = new_id()
    time.sleep(0.003)
    second = new_id()
    assert first < second
    assert abs(int(first[:12], 16) - before) <= 1000  # the first 48 bits: Unix time in milliseconds


def test_new_ids_do_not_repeat_and_their_short_forms_are_random():
    ids = [new_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    shorts = {short_id(i) for i in ids}
    assert len(shorts) > 99_990  # 40 random bits: a repeat in 100,000 has odds of about 1 in 220
    assert all(len(s) == SHORT_ID_DIGITS for s in shorts)


def test_short_id_is_the_end_of_an_id_of_either_version():
    old = uuid.uuid4().hex
    assert short_id(old) == old[-SHORT_ID_DIGITS:]
    new = new_id()
    assert new.endswith(short_id(new))


def test_like_escape_takes_wildcards_literally():
    assert like_escape("a%b_c\\d") == "a\\%b\\_c\\\\d"
