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


def test_the_plugins_lr_factor_changes_with_the_first_batch_of_the_new_size_and_resumes_deferred(tmp_path):
    """A decision reaches the plugin while 8 batches of the old size are queued: the LR factor
    waits for them, step for step, and a checkpoint taken meanwhile resumes still deferred."""
    import time

    from gputuned.trainer_plugin.plugin import TrainingPlugin
    from gputuned.trainer_plugin.testing import FakeDaemon

    def plugin_for(sampler: LoaderBatchSampler, opt: torch.optim.Optimizer, **kw) -> TrainingPlugin:
        return TrainingPlugin(job="loader", batch_size=8, optimizer=opt, lr_scaling="linear", max_batch_size=64,
                              sync_interval=1, on_batch_size=sampler.on_batch_size, **kw)

    def train(sampler, plugin, opt, sizes, after=None) -> None:
        for x, in sampler.track(_loader(sampler)):
            with plugin.step(samples=len(x)):
                opt.step()  # the pre-hook below records the LR this step ran with
            sizes.append(len(x))
            if after is not None:  # between steps: where a checkpoint is taken
                after(len(sizes))
            time.sleep(0.004)  # lets the decision travel from the fake daemon

    def record_lrs(opt: torch.optim.Optimizer) -> list[float]:
        """The LR each step ran with (a pre-hook registered after the plugin's runs after it)."""
        lrs: list[float] = []
        opt.register_step_pre_hook(lambda o, a, k: lrs.append(o.param_groups[0]["lr"]))
        return lrs

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sampler, sizes, saved = LoaderBatchSampler(N, 8, seed=2), [], {}
    with FakeDaemon(str(tmp_path / "l.sock"), report_interval_s=0.02) as daemon:
        plugin = plugin_for(sampler, opt, socket_path=str(tmp_path / "l.sock"))
        lrs = record_lrs(opt)
        assert plugin.client.wait_connected(5)

        def script(step: int) -> None:
            if step == 2:
                daemon.send({"id": "up", "batch_size": 16})
            if plugin.decisions_applied and not saved and sizes[-1] == 8:  # deferred right now
                saved.update(plugin=plugin.state_dict(), sampler=sampler.state_dict(), step=len(sizes))

        train(sampler, plugin, opt, sizes, after=script)
        plugin.close()
    assert plugin.decisions_applied == 1 and saved, daemon.of_type("ack")
    assert 16 in sizes and sizes.index(16) > sizes.index(8) + LOOKAHEAD - 1
    first = sizes.index(16)  # the first batch of the new size (the epoch's last one is short)
    assert len(lrs) == len(sizes) and lrs == [0.1] * first + [0.1 * 16 / 8] * (len(sizes) - first)
    # resume from the checkpoint taken while the factor was deferred
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sampler2 = LoaderBatchSampler(N, 8, seed=2)
    sampler2.load_state_dict(saved["sampler"])
    plugin2 = plugin_for(sampler2, opt2, connect=False)
    lrs2 = record_lrs(opt2)
    plugin2.load_state_dict(saved["plugin"])
    sizes2: list[int] = []
    train(sampler2, plugin2, opt2, sizes2)
    assert sizes2 == sizes[saved["step"]:] and lrs2 == lrs[saved["step"]:]
