"""Pairs (duplicate ids, sampling, fingerprint) and the resumable epoch samplers (random and grouped)."""

from __future__ import annotations

import pytest
import torch

from mmssl.data.pairs import Pairs
from mmssl.engine.sampling import EpochSampler, GroupedSampler


def test_identical_queries_share_an_id():
    pairs = Pairs.from_texts(["Sort a list.", "Open a file.", "sort a  LIST.", "Close it."], ["a", "b", "c", "d"])
    assert pairs.ids.tolist() == [0, 1, 0, 2]
    with pytest.raises(ValueError, match="3 queries but 2 candidates"):
        Pairs.from_texts(["a", "b", "c"], ["x", "y"])


def test_sample_is_a_seeded_ordered_subset():
    pairs = Pairs.from_texts([f"q{i}" for i in range(50)], [f"c{i}" for i in range(50)])
    s1, s2, s3 = pairs.sample(10, seed=0), pairs.sample(10, seed=0), pairs.sample(10, seed=1)
    assert s1.queries == s2.queries and s1.queries != s3.queries
    idx = [int(q[1:]) for q in s1.queries]
    assert idx == sorted(idx) and len(set(idx)) == 10
    assert [f"c{i}" for i in idx] == s1.candidates
    assert pairs.sample(None) is pairs and pairs.sample(500) is pairs
    assert pairs.fingerprint() != s1.fingerprint()


def test_sampler_covers_each_epoch_once_and_resumes_exactly():
    sampler = EpochSampler(n=10, batch_size=3, seed=5)
    epoch0 = torch.cat([sampler.next() for _ in range(3)])  # 3 full batches, 1 left over
    assert len(set(epoch0.tolist())) == 9
    first_of_epoch1 = sampler.next()
    assert sampler.epoch == 1
    state = sampler.state()
    ahead = [sampler.next() for _ in range(4)]
    again = EpochSampler(n=10, batch_size=3, seed=5)
    again.load_state(state)
    assert all(torch.equal(a, b) for a, b in zip(ahead, [again.next() for _ in range(4)]))
    assert not torch.equal(first_of_epoch1, epoch0[:3])  # a new order each epoch
    with pytest.raises(ValueError, match="batch_size=3, this run 4"):
        EpochSampler(n=10, batch_size=4, seed=5).load_state(state)
    with pytest.raises(ValueError, match="exceeds the 10 training pairs"):
        EpochSampler(n=10, batch_size=11, seed=0)


def test_grouped_sampler_keeps_each_group_together_and_resumes():
    groups = torch.tensor([3, 0, 1, 3, 2, 0, 1, 1, 2, 3, 0, 2])  # 4 groups of 3, ids not in order
    sampler = GroupedSampler(groups, batch_size=3, seed=1)
    epochs = []
    for _ in range(2):
        order = torch.cat([sampler.next() for _ in range(sampler.batches_per_epoch)])
        assert sorted(order.tolist()) == list(range(12))  # every example once
        # laid end to end: each batch of 3 is one whole group
        assert all(len(set(groups[order[i : i + 3]].tolist())) == 1 for i in range(0, 12, 3))
        epochs.append(order)
    assert not torch.equal(*epochs)  # the groups and their members reshuffle each epoch
    state = sampler.state()
    ahead = [sampler.next() for _ in range(5)]
    again = GroupedSampler(groups, batch_size=3, seed=1)
    again.load_state(state)
    assert all(torch.equal(a, b) for a, b in zip(ahead, [again.next() for _ in range(5)]))
    other = GroupedSampler(torch.tensor([0, 1] * 6), batch_size=3, seed=1)
    with pytest.raises(ValueError, match="batches were groups [0-9a-f]+, this run's groups [0-9a-f]+"):
        other.load_state(state)
    with pytest.raises(ValueError, match="this run's random batches"):
        EpochSampler(n=12, batch_size=3, seed=1).load_state(state)  # grouped run resumed as random
