"""``mask="attention_mask"``: the mask of positions read from a key of Hugging Face-style mapping inputs.

A transformers GPT-2 built from a small config (random weights, float64) with right-padded sequences: every
entry point gives with the key exactly what it gives with the same mask passed as a tensor, and the exact
diagonal matches a ``torch.func`` oracle that sums the per-position Fisher over the unmasked positions only.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, jacrev
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader

import fishertut as ft
from helpers import assert_dicts_close

V, T, N = 11, 5, 4


def _gpt2(vocab, embd, heads):
    import transformers  # a test dependency (requirements.txt)

    config = transformers.GPT2Config(
        vocab_size=vocab,
        n_positions=T + 1,
        n_embd=embd,
        n_layer=1,
        n_head=heads,
        resid_pdrop=0,
        embd_pdrop=0,
        attn_pdrop=0,
    )
    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(config).double().eval()


@pytest.fixture(scope="module")
def gpt2():
    return _gpt2(V, 8, 2)


@pytest.fixture(scope="module")
def small():
    """For the second-derivative entry points (the generic engine loops over the inputs of a HF model)."""
    return _gpt2(3, 2, 1)


def _inputs(n=N, vocab=V):
    ids = torch.randint(0, vocab, (n, T), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([5, 3, 4, 2])[:n]
    mask = (torch.arange(T) < lengths[:, None]).long()  # right padding, as a tokenizer gives it
    return {"input_ids": ids, "attention_mask": mask}


def _oracle(model, inputs):
    r""":math:`\frac1N\sum_n\sum_{t:\,m_{nt}=1}\sum_v p_{ntv}(\partial_\theta\log p_{ntv})^2` by ``jacrev``."""
    params = {k: p.detach() for k, p in model.named_parameters()}
    total = {k: torch.zeros_like(p) for k, p in params.items()}
    rows = inputs["input_ids"].shape[0]
    for n in range(rows):
        ids, m = inputs["input_ids"][n : n + 1], inputs["attention_mask"][n : n + 1]

        def logp(ps, ids=ids, m=m):
            return torch.log_softmax(functional_call(model, ps, (), {"input_ids": ids, "attention_mask": m}).logits, -1)

        with sdpa_kernel([SDPBackend.MATH]):
            jac = jacrev(logp)(params)
            p = logp(params).exp()[0]  # (T, V)
        keep = m[0].bool()
        for k, g in jac.items():
            g = g[0][keep]  # (T_kept, V, *shape)
            w = p[keep].reshape(*p[keep].shape, *([1] * (g.ndim - 2)))
            total[k] += (w * g.square()).sum((0, 1))
    return {k: v / rows for k, v in total.items()}


def _tensor_mask(inputs):
    return inputs["attention_mask"].bool()


def test_the_exact_diagonal_with_a_mask_key_matches_the_oracle(gpt2):
    inputs = _inputs()
    got = ft.fisher_diagonal(gpt2, inputs, ft.Categorical(), mask="attention_mask")
    want = _oracle(gpt2, inputs)
    assert max(float(t.abs().max()) for t in want.values()) > 1e-6
    assert_dicts_close(got, want, rtol=1e-9, atol_scale=1e-12, what="exact")
    unmasked = ft.fisher_diagonal(gpt2, inputs, ft.Categorical())  # padded positions would count: different
    assert not torch.allclose(unmasked["transformer.h.0.mlp.c_fc.weight"], want["transformer.h.0.mlp.c_fc.weight"])


@pytest.mark.parametrize(
    ("estimator", "minibatch"),
    [("exact", 1), ("i1", 1), ("i1_sequence", 1), ("i2", 1), ("hutchinson", 1), ("i1_sequence", 2), ("hutchinson", 2)],
)
def test_fisher_diagonal_with_a_key_equals_the_tensor_mask(gpt2, small, estimator, minibatch):
    inputs = _inputs(3, 3) if estimator == "i2" else _inputs()
    model = small if estimator == "i2" else gpt2

    def run(mask):
        gen = torch.Generator().manual_seed(5)
        return ft.fisher_diagonal(
            model, inputs, ft.Categorical(), estimator, generator=gen, minibatch=minibatch, mask=mask
        )

    assert_dicts_close(run("attention_mask"), run(_tensor_mask(inputs)), rtol=1e-12, what=estimator)


def test_the_report_statistics_and_terms_with_a_key_equal_the_tensor_mask(small):
    inputs, fam = _inputs(3, 3), ft.Categorical()
    key, tensor = "attention_mask", _tensor_mask(inputs)
    a, b = ft.variance_report(small, inputs, fam, mask=key), ft.variance_report(small, inputs, fam, mask=tensor)
    for field in ("fisher", "var_i1", "var_i2", "var_hutchinson", "var_i1_sequence"):
        assert_dicts_close(getattr(a, field), getattr(b, field), rtol=1e-12, what=field)
    assert_dicts_close(a.fisher, _oracle(small, inputs), rtol=1e-9, atol_scale=1e-12, what="report fisher")
    a, b = (
        ft.per_input_statistics(small, inputs, fam, mask=key),
        ft.per_input_statistics(small, inputs, fam, mask=tensor),
    )
    assert_dicts_close(a.fisher, b.fisher, rtol=1e-12, what="per-input fisher")
    terms = [
        ft.estimator_terms(small, inputs, fam, generator=torch.Generator().manual_seed(2), mask=m)
        for m in (key, tensor)
    ]
    assert_dicts_close(terms[0].i1, terms[1].i1, rtol=1e-12, what="terms i1")


def test_estimate_with_a_key_equals_the_tensor_mask(small):
    inputs = _inputs(3, 3)

    def run(mask):
        gen = torch.Generator().manual_seed(4)
        return ft.estimate(
            small, inputs, ft.Categorical(), rtol=0.5, delta=0.2, generator=gen, pilot=2, max_samples=2, mask=mask
        )

    a, b = run("attention_mask"), run(_tensor_mask(inputs))
    assert {k: e.estimator for k, e in a.plan.items()} == {k: e.estimator for k, e in b.plan.items()}
    assert_dicts_close(a, b, rtol=1e-12, what="estimate")


def test_a_dataloader_of_mappings_takes_the_key_per_batch(gpt2):
    inputs = _inputs()
    rows = [{k: v[i] for k, v in inputs.items()} for i in range(N)]
    got = ft.fisher_diagonal(gpt2, DataLoader(rows, batch_size=3), ft.Categorical(), mask="attention_mask")
    assert_dicts_close(got, _oracle(gpt2, inputs), rtol=1e-9, atol_scale=1e-12, what="exact, batches")


@pytest.mark.parametrize(
    ("inputs", "mask", "match"),
    [
        ("tensor", "attention_mask", "names an entry of a mapping of inputs"),
        ("mapping", "padding_mask", "is not a key of the inputs"),
        ("float", "attention_mask", "must be boolean or integers 0 and 1"),
        ("twos", "attention_mask", "must be boolean or integers 0 and 1"),
    ],
)
@pytest.mark.parametrize("entry", ["fisher_diagonal", "minibatch", "variance_report", "estimate"])
def test_a_bad_mask_key_is_refused_naming_the_argument(gpt2, inputs, mask, match, entry):
    x = _inputs()
    if inputs == "tensor":
        x = x["input_ids"]
    elif inputs == "float":
        x["attention_mask"] = x["attention_mask"].double()
    elif inputs == "twos":
        x["attention_mask"] = x["attention_mask"] * 2
    fam = ft.Categorical()
    calls = {
        "fisher_diagonal": lambda: ft.fisher_diagonal(gpt2, x, fam, mask=mask),
        "minibatch": lambda: ft.fisher_diagonal(gpt2, x, fam, "i1_sequence", minibatch=2, mask=mask),
        "variance_report": lambda: ft.variance_report(gpt2, x, fam, mask=mask),
        "estimate": lambda: ft.estimate(gpt2, x, fam, pilot=2, mask=mask),
    }
    with pytest.raises(ValueError, match=f"mask={mask!r}.*{match}|{match}"):
        calls[entry]()
