"""The resizable batch sampler behind a DataLoader with 4 worker processes: resized mid-epoch, resumed, per rank."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from gputuned.trainer_plugin.loader_sampler import LoaderBatchSampler

N = 203  # not a multiple of any batch size below: the last batch is short
WORKERS = 4
LOOKAHEAD = 2 * WORKERS  # the DataLoader's default prefetch_factor x workers
# more workers than this host's cores, on purpose: the prefetch depth is what is tested
pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create")


def _loader(sampler: LoaderBatchSampler) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(N)), batch_sampler=sampler, num_workers=WORKERS)


def _run(samplers: list[LoaderBatchSampler], resizes: dict[int, int], stop_after: int | None = None
         ) -> tuple[list[list[int]], list[list[int]], list[int]]:
    """Iterate every rank's loader in step; resize all when they have received batch k; per rank indices, sizes."""
    seen: list[list[int]] = [[] for _ in samplers]
    sizes: list[list[int]] = [[] for _ in samplers]
    effect: list[int] = []
    loaders = [s.track(_loader(s)) for s in samplers]
    for step, batches in enumerate(zip(*loaders, strict=True), start=1):
        for r, (b,) in enumerate(batches):
            seen[r] += b.tolist()
            sizes[r].append(len(b))
        if step in resizes:
            at = {s.resize(resizes[step]) for s in samplers}
            assert len(at) == 1  # every rank's new size starts at the same batch
            effect.append(at.pop())
        if stop_after is not None and step == stop_after:
            break
    return seen, sizes, effect


def test_a_four_worker_loader_resized_mid_epoch_sees_every_sample_once():
    sampler = LoaderBatchSampler(N, 8, seed=3)
    (seen,), (sizes,), effect = _run([sampler], {3: 12, 7: 4})
    assert sorted(seen) == list(range(N))  # none lost, none repeated
    # the batches already prefetched keep their size; the new one starts at the returned index
    assert effect == [3 + LOOKAHEAD, 7 + LOOKAHEAD]
    assert sizes[:effect[0]] == [8] * effect[0]
    assert sizes[effect[0]:effect[1]] == [12] * (effect[1] - effect[0])
    assert set(sizes[effect[1]:-1]) == {4}
    # the next epoch is a new permutation at the last size, again complete
    sampler.new_epoch()
    (seen2,), (sizes2,), _ = _run([sampler], {})
    assert sorted(seen2) == list(range(N)) and seen2 != seen
    assert sizes2[0] == 4


def test_two_ranks_resized_at_the_same_batch_share_the_epoch_without_overlap():
    samplers = [LoaderBatchSampler(N, 8, rank=r, world_size=2, seed=1) for r in (0, 1)]
    seen, sizes, effect = _run(samplers, {2: 16})
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(N))
    assert sizes[0][effect[0]] == sizes[1][effect[0]] == 8  # each rank's half of a global 16
    assert sizes[0][effect[0] - 1] == 4


def test_resume_from_the_consumed_state_replays_exactly_the_batches_not_trained_on():
    full = LoaderBatchSampler(N, 8, seed=5)
    (whole,), (whole_sizes,), _ = _run([full], {2: 12, 5: 6})
    first = LoaderBatchSampler(N, 8, seed=5)
    (head,), (head_sizes,), _ = _run([first], {2: 12, 5: 6}, stop_after=6)
    state = first.state_dict()  # 6 batches received, 8 more sampled in flight, two sizes among them
    assert state["batches"] == 6 and state["cursor"] == len(head)
    resumed = LoaderBatchSampler(N, 999, seed=5)
    resumed.load_state_dict(state)
    (tail,), (tail_sizes,), _ = _run([resumed], {})
    assert head + tail == whole
    assert head_sizes + tail_sizes == whole_sizes


def test_a_resize_cannot_reach_back_into_batches_already_sampled():
    sampler = LoaderBatchSampler(N, 8)
    it = iter(sampler)
    for _ in range(3):
        next(it)
    with pytest.raises(ValueError, match="already sampled"):
        sampler.resize(4, at_batch=2)
    assert sampler.resize(4, at_batch=5) == 5
    assert sampler.resize(16) == 3  # default: the first batch not yet sampled
