"""``Pairs`` and ``Captions``: ids shared by equal texts, captions drawn per pair, subsets, sources."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mmssl.data.image_text import ImageDataError, ImageTextRecord
from mmssl.data.pairs import Pairs
from mmssl.recipes.image_pairs import further_captions, split_sources


def test_captions_share_the_ids_of_equal_texts_and_a_pair_without_any_draws_its_query():
    more = [["red apple", "apple", "Red Apple", "fruit"], ["fruit", " "], []]
    pairs = Pairs.from_texts(["red apple", "green orchard", "pear"], ["a.png", "b.png", "c.png"], more)
    c = pairs.captions
    assert c.texts == ["red apple", "apple", "fruit", "fruit", "pear"]  # repeats and blanks dropped
    assert c.starts.tolist() == [0, 3, 4, 5]
    assert "green orchard" not in c.texts  # a held-out query is never a training caption
    assert c.ids[0] == pairs.ids[0] and c.ids[4] == pairs.ids[2]  # a text keeps its one id
    assert c.ids[2] == c.ids[3] and len(set(c.ids.tolist())) == 4  # "fruit" is one text wherever it is
    with pytest.raises(ValueError, match="2 queries but 1 caption lists"):
        Pairs.from_texts(["a", "b"], [1, 2], [["x"]])


def test_a_draw_is_uniform_over_each_pairs_captions_and_the_same_for_a_pair_in_any_batch():
    lists = [[f"p{i} c{j}" for j in range(1 + i % 3)] for i in range(200)]  # 1, 2 or 3 captions each
    pairs = Pairs.from_texts([f"p{i}" for i in range(200)], list(range(200)), lists)
    c = pairs.captions
    rows = torch.arange(200)
    keys = pairs.ids[rows]
    counts = torch.zeros(len(c.texts))
    for seed in range(300):
        drawn = c.draw(rows, keys, seed)
        assert ((drawn >= c.starts[rows]) & (drawn < c.starts[rows + 1])).all()
        counts += torch.bincount(drawn, minlength=len(c.texts))
        assert torch.equal(c.draw(rows[50:60], keys[50:60], seed), drawn[50:60])  # batch-mates do not matter
    sizes = (c.starts[1:] - c.starts[:-1]).repeat_interleave(c.starts[1:] - c.starts[:-1])
    expected = 300 / sizes  # each of a pair's n captions 1/n of the time
    assert ((counts - expected).abs() / expected).mean() < 0.1


def test_pairs_with_the_same_query_and_captions_draw_the_same_caption():
    """An icon in two themes: two images, one name, the same captions: the same text in a batch,
    which the loss then masks as one."""
    pairs = Pairs.from_texts(["folder music"] * 2, ["a.png", "b.png"], [["folder music", "folder music place"]] * 2)
    rows = torch.tensor([0, 1])
    for seed in range(20):
        drawn = pairs.captions.draw(rows, pairs.ids[rows], seed)
        assert pairs.captions.texts[drawn[0]] == pairs.captions.texts[drawn[1]]


def test_subsets_and_samples_carry_their_captions():
    pairs = Pairs.from_texts(["a", "b", "c"], ["x", "y", "z"], [["a", "a1"], [], ["c1", "c2"]])
    sub = pairs.subset([2, 0])
    assert sub.queries == ["c", "a"] and sub.captions.texts == ["c1", "c2", "a", "a1"]
    assert sub.captions.starts.tolist() == [0, 2, 4]
    assert sub.captions.ids.tolist() == [pairs.captions.ids[i].item() for i in (3, 4, 0, 1)]
    assert pairs.fingerprint() != Pairs.from_texts(["a", "b", "c"], ["x", "y", "z"]).fingerprint()


def test_several_sources_are_split_on_commas_unless_one_path_has_one(tmp_path):
    assert split_sources("runs/emoji,runs/icons") == ["runs/emoji", "runs/icons"]
    assert split_sources("hf:org/set") == ["hf:org/set"]
    odd = tmp_path / "a,b"
    odd.mkdir()
    assert split_sources(str(odd)) == [str(odd)]


def test_a_captions_field_that_is_not_a_list_of_strings_names_the_record():
    ok = ImageTextRecord("x.png", "cat", "meta.jsonl:3", {"captions": ["cat", "kitten"]})
    assert further_captions(ok) == ["cat", "kitten"]
    bad = ImageTextRecord("x.png", "cat", "meta.jsonl:4", {"captions": "kitten"})
    with pytest.raises(ImageDataError, match="meta.jsonl:4: field 'captions' must be a list of strings"):
        further_captions(bad)


def test_a_first_caption_share_draws_the_first_that_often_and_the_others_alike():
    pairs = Pairs.from_texts(["a", "b"], ["x", "y"], [["a", "k1", "k2", "k3"], ["b"]])
    captions = replace(pairs.captions, first_p=0.5)
    rows = torch.tensor([0, 1])
    counts = torch.zeros(len(captions.texts))
    for seed in range(2000):
        counts += torch.bincount(captions.draw(rows, pairs.ids[rows], seed), minlength=len(captions.texts))
    share = counts / 2000
    assert abs(share[0] - 0.5) < 0.04 and all(abs(share[i] - 1 / 6) < 0.03 for i in (1, 2, 3))
    assert share[4] == 1.0  # a pair with one caption always draws it
    assert replace(pairs, captions=captions).subset([0]).captions.first_p == 0.5
