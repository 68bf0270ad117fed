"""Hugging Face-style models: mapping inputs passed by keyword, outputs read through ``.logits`` (issue 17, 6).

A plain torch module with a keyword-only forward returning a dataclass (or a dict) with ``logits`` runs on
every entry point, exact against the torch.func oracle on an equivalent module taking one tensor; a tiny
``transformers`` BERT classifier (random weights from a config, no download) with an attention mask is
exact too. Labels come from a named key of the batches.
"""

import dataclasses

import pytest
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader

import fishertut as ft
import oracle
from entry_points import assert_every_entry_point
from helpers import assert_dicts_close, mean0
from oracle import Problem


@dataclasses.dataclass
class Output:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


class KeywordModel(nn.Module):
    """``forward(*, feats, extra)``: keyword-only, returning an object with ``logits`` (or a dict)."""

    def __init__(self, as_dict=False):
        super().__init__()
        torch.manual_seed(4)
        self.a, self.b, self.c = nn.Linear(3, 4), nn.Linear(2, 4), nn.Linear(4, 3)
        self.as_dict = as_dict

    def forward(self, *, feats, extra):
        logits = self.c(torch.tanh(self.a(feats) + self.b(extra)))
        return {"logits": logits, "hidden": feats} if self.as_dict else Output(logits)


class Packed(nn.Module):
    """The reference for the oracle: the same module (and parameters) on one tensor, split into the keywords."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(feats=x[:, :3], extra=x[:, 3:])
        return out["logits"] if isinstance(out, dict) else out.logits


def _mapping(n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {
        "feats": torch.randn(n, 3, dtype=torch.float64, generator=gen),
        "extra": torch.randn(n, 2, dtype=torch.float64, generator=gen),
    }


@pytest.mark.parametrize("as_dict", [False, True])
@pytest.mark.parametrize("family", ["categorical", "gaussian"])
def test_keyword_model_is_exact_on_every_entry_point(as_dict, family):
    model = KeywordModel(as_dict).double()
    inputs = _mapping()
    x = torch.cat([inputs["feats"], inputs["extra"]], 1)
    rep = assert_every_entry_point(model, inputs, family, 0.7, reference=Packed(model), x=x, prefix="inner.")
    assert rep.path == "generic"


def test_labels_from_a_named_key_of_a_dataloader_of_mappings():
    model = KeywordModel().double()
    inputs = _mapping(n=6)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    rows = [{"feats": inputs["feats"][i], "extra": inputs["extra"][i], "labels": labels[i]} for i in range(6)]
    loader = DataLoader(rows, batch_size=4)
    fam = ft.Categorical()
    for kwargs in ({}, {"minibatch": 3}):
        got = ft.fisher_diagonal(model, loader, fam, "i1", targets="labels", **kwargs)
        want = ft.fisher_diagonal(model, inputs, fam, "i1", targets=labels, **kwargs)
        assert got.keys() == want.keys() and all(torch.allclose(got[k], want[k], rtol=1e-12) for k in got)
    x = torch.cat([inputs["feats"], inputs["extra"]], 1)
    i1, _ = oracle.estimator_values(Problem("kw", Packed(model), x, "categorical"), labels[:, None])
    got = ft.fisher_diagonal(model, loader, fam, "i1", targets="labels")
    assert_dicts_close(got, {k[len("inner.") :]: v for k, v in i1.items()}, rtol=1e-9)
    with pytest.raises(ValueError, match="targets='label' names no entry of the input batch"):
        ft.fisher_diagonal(model, loader, fam, "i1", targets="label")
    with pytest.raises(ValueError, match="name the key of the labels instead"):
        ft.fisher_diagonal(model, loader, fam, "i1", targets="data")


def test_tensor_inputs_reach_a_single_keyword_only_argument():
    class OnlyKeyword(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(5)
            self.lin = nn.Linear(3, 3)

        def forward(self, *, input_values):
            return Output(torch.tanh(self.lin(input_values)))

    class Plain(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(input_values=x).logits

    model = OnlyKeyword().double()
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert_every_entry_point(model, x, reference=Plain(model), x=x, prefix="inner.")


@pytest.mark.parametrize(
    "inputs,error,match",
    [
        ({}, ValueError, "empty mapping"),
        ({"feats": torch.zeros(4, 3, dtype=torch.float64), "extra": [1, 2]}, TypeError, r"inputs\['extra'\] must be"),
        (
            {"feats": torch.zeros(4, 3, dtype=torch.float64), "extra": torch.zeros(3, 2, dtype=torch.float64)},
            ValueError,
            "must share the batch axis",
        ),
        ({"feats": torch.zeros(4, 3), "extra": torch.zeros(4, 2)}, ValueError, r"inputs\['feats'\] have dtype"),
    ],
)
def test_bad_mappings_are_refused(inputs, error, match):
    with pytest.raises(error, match=match):
        ft.fisher_diagonal(KeywordModel().double(), inputs, ft.Categorical())


def test_forced_fast_path_refuses_mapping_inputs():
    with pytest.raises(ft.UnsupportedModelError, match="takes a tensor of inputs, got a mapping"):
        ft.fisher_diagonal(KeywordModel().double(), _mapping(), ft.Categorical(), path="layerwise")


def test_transformers_bert_classifier_with_an_attention_mask_is_exact():
    import transformers  # a test dependency (requirements.txt)

    config = transformers.BertConfig(
        vocab_size=7,
        hidden_size=4,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=4,
        max_position_embeddings=6,
        type_vocab_size=1,
        num_labels=3,
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).double().eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (3, 4), generator=gen)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]])
    inputs = {"input_ids": ids, "attention_mask": mask}

    class Reference(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(input_ids=x[:, :4].long(), attention_mask=x[:, 4:].long()).logits

    problem = Problem("bert", Reference(model), torch.cat([ids, mask], 1).double(), "categorical")
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU kernel has no second derivatives for the oracle
        ref = oracle.conditional_by_chain_rule(problem)
        i1, _ = oracle.estimator_values(problem, torch.tensor([[0], [1], [2]]))
    strip = {k: {n[len("inner.") :]: t for n, t in v.items()} for k, v in ref.items()}
    fisher = mean0(strip["fisher"])
    assert max(float(t.abs().max()) for t in fisher.values()) > 1e-6
    rep = ft.variance_report(model, inputs, ft.Categorical())
    assert rep.path == "generic"
    for field in ("fisher", "var_i1", "var_i2"):
        assert_dicts_close(getattr(rep, field), mean0(strip[field]), rtol=1e-9, what=field)
    rows = [{"input_ids": ids[i], "attention_mask": mask[i], "labels": torch.tensor(i % 3)} for i in range(3)]
    got = ft.fisher_diagonal(model, DataLoader(rows, batch_size=2), ft.Categorical(), "i1", targets="labels")
    assert_dicts_close(got, {k[len("inner.") :]: v for k, v in i1.items()}, rtol=1e-9, what="i1")
