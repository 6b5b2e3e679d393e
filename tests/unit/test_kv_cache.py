"""The cache buffers' policy on its own: a step writes in place only into a column no other step
wrote, a reservation sizes buffers once, reordering takes turns between two sets of buffers (or
moves rows kept in order within one), `put` writes newcomers into their rows' first columns."""
import torch

from transduce.models import kv_cache
from transduce.models.kv_cache import KVCache

LAYERS, HEADS, D = 2, 1, 3


def _filled(rows: int, length: int) -> KVCache:
    """A cache whose row b holds b * 100 + column in its first `length` columns."""
    cache = KVCache.empty(LAYERS, rows, HEADS, D, like=torch.zeros(()))
    for column in range(length):
        cache = cache.for_step(column)
        for buffer in cache.keys + cache.values:
            buffer[:, :, column] = (torch.arange(rows) * 100 + column).view(rows, 1, 1).float()
    return cache


def _rows(cache: KVCache, length: int) -> list[int]:
    """Which filled row each row holds (checked in every layer's keys and values)."""
    for buffer in cache.keys + cache.values:
        filled = buffer[:, :, :length]  # (B, h, length, d)
        assert torch.equal(filled % 100, torch.arange(length).float().view(length, 1).expand_as(filled))
    return (cache.keys[0][:, 0, 0, 0] // 100).long().tolist()


def test_a_step_writes_in_place_unless_another_step_wrote_that_column():
    cache = _filled(2, 3)
    assert cache.for_step(3) is cache  # nobody wrote column 3 of these buffers: in place
    branch = cache.for_step(3)  # a second step from the same state: a copy, twice the room
    assert branch is not cache and branch.capacity == 2 * cache.capacity and _rows(branch, 3) == [0, 1]
    assert branch.for_step(4) is branch


def test_reserve_sizes_the_buffers_once_up_to_the_limit(monkeypatch):
    cache = _filled(2, 3).reserve(3, 40)
    assert cache.capacity == cache.reserved == 43 and _rows(cache, 3) == [0, 1]
    assert cache.copied(torch.tensor([1]), 3).capacity == 43  # copies keep the reserved room
    monkeypatch.setattr(kv_cache, "RESERVE_LIMIT", 8)
    assert _filled(2, 3).reserve(3, 10_000).reserved == 11


def test_reordered_moves_rows_kept_in_order_within_the_buffers_and_others_take_turns():
    cache = _filled(4, 3)
    kept = cache.reordered(torch.tensor([1, 3]), 3)  # in order: moved up, same buffers
    assert kept.keys[0].data_ptr() == cache.keys[0].data_ptr() and _rows(kept, 3) == [1, 3]
    cache = _filled(4, 3)
    first = cache.reordered(torch.tensor([3, 2, 1, 0]), 3)  # fresh buffers; these become the spare
    second = first.reordered(torch.tensor([3, 2, 1, 0]), 3)  # into the first one's buffers
    assert _rows(first, 3) == [3, 2, 1, 0] and _rows(second, 3) == [0, 1, 2, 3]
    assert second.keys[0].data_ptr() == cache.keys[0].data_ptr()


def test_copied_rows_are_new_buffers_that_keep_no_spare():
    cache = _filled(4, 3)
    copied = cache.copied(torch.tensor([2, 2]), 3)
    assert copied.keys[0].data_ptr() != cache.keys[0].data_ptr() and copied.spare is None
    assert _rows(copied, 3) == [2, 2] and copied.capacity == 3 + kv_cache.SELECT_ROOM


def test_rearranged_copies_only_the_rows_that_change():
    cache = _filled(4, 3)
    moved = cache.rearranged(torch.tensor([0, 3, 3]), 3)
    assert moved.keys[0].data_ptr() == cache.keys[0].data_ptr() and _rows(moved, 3) == [0, 3, 3]


def test_put_writes_newcomers_from_the_first_column_and_grows_for_their_reservation():
    cache, newcomer = _filled(3, 5), _filled(1, 2).reserve(2, 60)
    joined = cache.put(torch.tensor([1]), newcomer, filled=5, theirs=2, length=5)
    assert joined.reserved == 62 and joined.capacity >= 62 and joined.written == [5]
    for mine, before, theirs in zip(joined.keys + joined.values, cache.keys + cache.values,
                                    newcomer.keys + newcomer.values):
        assert torch.equal(mine[1, :, :2], theirs[0, :, :2])
        assert torch.equal(mine[[0, 2], :, :5], before[[0, 2], :, :5])
