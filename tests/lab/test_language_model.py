"""Tests of the language-model support: the pydoc corpus and its split, the char GPT, merging and saliency."""

from __future__ import annotations

import pytest
import torch

from fishertut.lab import gpt, merging, text, tokens


def test_topic_split_is_deterministic_disjoint_and_complete():
    names = list(text.topics())
    statements, others = text.split_topics()
    assert (statements, others) == text.split_topics(list(reversed(names)))
    assert not set(statements) & set(others)
    assert sorted(statements + others) == sorted(names)
    assert {"assert", "if", "while", "assignment"} <= set(statements)
    assert {"numbers", "strings"} & set(others)
    assert len(statements) >= 10 and len(others) >= 10


def test_corpus_is_large_enough_and_round_trips():
    corpus = "".join(text.topics().values())
    assert len(corpus) > 300_000
    vocab = text.CharCorpus.from_text(corpus)
    sample = corpus[1000:1500]
    assert vocab.decode(vocab.encode(sample)) == sample
    with pytest.raises(ValueError, match="not in the vocabulary"):
        text.CharCorpus.from_text("abc").encode("abd")


def test_windows_shift_by_one():
    ids = torch.arange(20)
    x, y = text.windows(ids, context=6, stride=4)
    assert x.shape == y.shape == (4, 6)
    assert torch.equal(y, x + 1)
    assert torch.equal(x[:, 0], torch.tensor([0, 4, 8, 12]))
    with pytest.raises(ValueError, match="at least 7 tokens"):
        text.windows(torch.arange(6), context=6)


def test_char_gpt_is_causal_and_shaped():
    model = gpt.char_gpt(vocab_size=11, context=8, d_model=16, heads=2, layers=2, seed=3, dtype=torch.float64)
    ids = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(0))
    out = model(ids)
    assert out.shape == (3, 8, 11)
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 11
    assert torch.allclose(model(changed)[:, :5], out[:, :5], atol=1e-12)
    assert not torch.allclose(model(changed)[:, 5:], out[:, 5:])
    assert torch.equal(gpt.char_gpt(11, 8, 16, 2, 2, seed=3, dtype=torch.float64)(ids), out)
    long = model.generate(ids[0, :2], length=10, generator=torch.Generator().manual_seed(1))
    assert long.shape == (12,) and torch.equal(long[:2], ids[0, :2])


def test_tied_head_shares_the_embedding():
    model = gpt.char_gpt(vocab_size=5, context=4, d_model=8, heads=2, layers=1)
    names = [n for n, _ in model.named_parameters()]
    assert "token.weight" in names and not any("head" in n for n in names)


def test_one_gpt_class_and_its_parameter_groups():
    """The chapter's model and the benchmark's are one class; every parameter lands in its named group."""
    chapter = gpt.char_gpt(vocab_size=5, context=4, d_model=8, heads=2, layers=1)
    bench = gpt.tiny_gpt(vocab=5, context=4, d=8, heads=2, layers=1)
    assert type(chapter) is type(bench) is gpt.TinyGPT
    expected = {"token.weight": "embedding (tied head)", "position": "positions", "position.weight": "positions"}
    for model in (chapter, bench):
        for name, _ in model.named_parameters():
            group = tokens.group_of(name)
            if name in expected:
                assert group == expected[name], name
            elif ".attn." in name:
                assert group == "attention", name
            elif ".mlp." in name:
                assert group == "MLP", name
            else:
                assert group == "LayerNorm" and "norm" in name, name
    with pytest.raises(ValueError, match="context of 4"):
        chapter(torch.zeros(1, 5, dtype=torch.long))


def test_merge_with_equal_fishers_is_the_plain_average():
    a = {"w": torch.tensor([1.0, 2.0, -3.0])}
    b = {"w": torch.tensor([3.0, 0.0, 1.0])}
    f = {"w": torch.tensor([0.5, 2.0, 7.0])}
    merged = merging.fisher_merge([a, b], [f, f])
    assert torch.allclose(merged["w"], (a["w"] + b["w"]) / 2)


def test_merge_weights_by_fisher():
    a, b = {"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([5.0, 5.0])}
    fa, fb = {"w": torch.tensor([3.0, 0.0])}, {"w": torch.tensor([1.0, 2.0])}
    merged = merging.fisher_merge([a, b], [fa, fb], eps=0.0)
    assert torch.allclose(merged["w"], torch.tensor([(3 * 1 + 1 * 5) / 4, 5.0]))
    with pytest.raises(ValueError, match="names"):
        merging.fisher_merge([a, {"v": b["w"]}], [fa, fb])


def test_saliency_ranking_by_hand():
    params = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([[0.5, 3.0]])}
    fisher = {"a": torch.tensor([4.0, 1.0]), "b": torch.tensor([[8.0, 0.1]])}
    s = merging.saliency(fisher, params)
    # by hand: a -> 4*1 = 4, 1*4 = 4; b -> 8*0.25 = 2, 0.1*9 = 0.9
    assert torch.allclose(s["a"], torch.tensor([4.0, 4.0])) and torch.allclose(s["b"], torch.tensor([[2.0, 0.9]]))
    pruned = merging.prune_lowest(params, s, fraction=0.5)
    assert torch.equal(pruned["a"], params["a"]) and torch.equal(pruned["b"], torch.tensor([[0.0, 0.0]]))
    assert merging.top_k_overlap(s, {"a": torch.tensor([0.0, 5.0]), "b": torch.tensor([[1.0, 9.0]])}, k=2) == 0.5
