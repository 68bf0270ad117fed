"""Outputs with positions (language models): exact values and variances against a brute-force oracle.

The oracle (tests/oracle_sequence.py) enumerates every joint label sequence of each input over the whole batch
with torch.func, in float64. Models: a tiny causal GPT (plain torch), a GRU LM and an LSTM LM (gates written
out), left-padded batches, both normalisations, both class-axis layouts.
"""

import functools

import pytest
import torch
from torch.func import jacrev

import fishertut as ft
from oracle_sequence import SequenceOracle, flat, flat_per_input, sequence_scores
from sequence_models import build, left_padded

VOCAB, STEPS, PADS = 4, 3, [0, 1, 2]
KINDS = ["gpt", "gru", "lstm"]
NORMS = ["sequence", "token"]


def close(actual, expected, what, rtol=1e-10):
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rtol * scale + 1e-14, f"{what}: max error {err:.3e} vs scale {scale:.3e}"


@functools.cache
def setting(kind, normalize, classes_first=False):
    kwargs = {"classes_first": True} if classes_first else {}
    model = build(kind, **kwargs)
    ids, mask = left_padded(3, STEPS, VOCAB, PADS)
    oracle = SequenceOracle(model, ids, mask, normalize=normalize, classes_first=classes_first)
    return model, ids, mask, oracle, oracle.statistics()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("normalize", NORMS)
@pytest.mark.parametrize("kind", KINDS)
def test_report_and_per_input_match_oracle(kind, normalize):
    model, ids, mask, _, o = setting(kind, normalize)
    fam = ft.Categorical()
    rep = ft.variance_report(model, ids, fam, mask=mask, normalize=normalize)
    close(flat(rep.fisher), o["fisher"].mean(0), "fisher")
    close(flat(rep.var_i1), o["var_tok"].mean(0), "var_i1 (per token)")
    close(flat(rep.var_i1_sequence), o["var_seq"].mean(0), "var_i1_sequence")
    close(flat(rep.var_i2), o["var_i2"].mean(0), "var_i2")
    close(flat(rep.var_x), o["fisher"].var(0, unbiased=False), "var_x", rtol=1e-8)
    # every estimator is unbiased for the same Fisher (the oracle's means over all label sequences)
    for key in ("mean_tok", "mean_seq", "mean_i2"):
        close(o[key], o["fisher"], key)
    per = ft.per_input_statistics(model, ids, fam, mask=mask, normalize=normalize)
    close(flat_per_input(per.fisher), o["fisher"], "per-input fisher")
    close(flat_per_input(per.var_i1_sequence), o["var_seq"], "per-input var_i1_sequence")
    exact = ft.fisher_diagonal(model, ids, fam, mask=mask, normalize=normalize)
    close(flat(exact), o["fisher"].mean(0), "fisher_diagonal exact")
    assert exact.normalize == normalize and rep.max_positions == STEPS


def test_sequence_variance_exceeds_token_variance_by_the_cross_terms():
    """var_i1_sequence - var_i1 = 2[(sum_t I_t)^2 - sum_t I_t^2] >= 0, zero with one position."""
    model, ids, mask, _, o = setting("gru", "sequence")
    rep = ft.variance_report(model, ids, ft.Categorical(), mask=mask)
    gap = flat(rep.var_i1_sequence) - flat(rep.var_i1)
    assert (gap >= -1e-15).all() and gap.max() > 0
    last = ft.variance_report(
        model, ids, ft.Categorical(), mask=torch.zeros_like(mask).index_fill_(1, torch.tensor([2]), True)
    )
    close(flat(last.var_i1_sequence), flat(last.var_i1), "one position")


@pytest.mark.parametrize("kind", ["gpt", "lstm"])
@pytest.mark.parametrize("normalize", NORMS)
def test_estimator_terms_at_sampled_labels_match_oracle(kind, normalize):
    model, ids, mask, oracle, _ = setting(kind, normalize)
    fam = ft.Categorical()
    terms = ft.estimator_terms(
        model, ids, fam, samples_per_input=3, generator=torch.Generator().manual_seed(5), mask=mask, normalize=normalize
    )
    assert terms.labels.shape == (3, 3, STEPS)
    for s in range(3):
        want = oracle.terms_at(terms.labels[:, s])
        for name in ("i1", "i1_sequence", "i2"):
            got = flat_per_input({k: v[:, s] for k, v in getattr(terms, name).items()})
            close(got, want[name], f"{name}[s={s}]")
    for est in ("i1", "i1_sequence", "i2"):
        f = ft.fisher_diagonal(
            model,
            ids,
            fam,
            est,
            samples_per_input=3,
            generator=torch.Generator().manual_seed(5),
            mask=mask,
            normalize=normalize,
        )
        close(flat(f), flat_per_input(getattr(terms, est), lead=2).mean((0, 1)), f"fisher_diagonal {est}")


def test_class_axis_one_reads_the_cross_entropy_layout():
    model, ids, mask, _, o = setting("gpt", "sequence")
    first, _, _, _, o1 = setting("gpt", "sequence", classes_first=True)
    close(o1["fisher"], o["fisher"], "oracle layouts")
    rep = ft.variance_report(first, ids, ft.Categorical(class_axis=1), mask=mask)
    close(flat(rep.var_i1_sequence), o["var_seq"].mean(0), "var_i1_sequence, classes in axis 1")
    close(flat(rep.var_i2), o["var_i2"].mean(0), "var_i2, classes in axis 1")
    gen = functools.partial(lambda: torch.Generator().manual_seed(3))
    a = ft.estimator_terms(model, ids, ft.Categorical(), generator=gen(), mask=mask)
    b = ft.estimator_terms(first, ids, ft.Categorical(class_axis=1), generator=gen(), mask=mask)
    assert torch.equal(a.labels, b.labels)
    close(flat_per_input(b.i1, lead=2), flat_per_input(a.i1, lead=2), "terms")


def test_class_axis_mismatch_is_refused_when_mask_or_targets_reveal_it():
    first, ids, mask, _, _ = setting("gpt", "sequence", classes_first=True)  # outputs (N, V=4, T=3)
    with pytest.raises(ValueError, match=r"mask must have shape.*class_axis=1"):
        ft.fisher_diagonal(first, ids, ft.Categorical(), mask=mask)
    with pytest.raises(ValueError, match=r"targets must have shape.*class_axis=1"):
        ft.fisher_diagonal(first, ids, ft.Categorical(), "i1", targets=ids)
    model = setting("gpt", "sequence")[0]
    with pytest.raises(ValueError, match=r"mask must have shape \(N, \*positions\) = \(3, 3\)"):
        ft.variance_report(model, ids, ft.Categorical(), mask=mask[:, :2])


@pytest.mark.parametrize("normalize", NORMS)
def test_fixed_labels_report_their_bias_against_the_oracle(normalize):
    model, ids, mask, oracle, o = setting("gru", normalize)
    fam = ft.Categorical()
    data = torch.roll(ids, -1, 1)
    h = model(ids).detach()
    rep = ft.variance_report(model, ids, fam, mask=mask, normalize=normalize)
    for est in ("i1", "i1_sequence", "i2"):
        emp = ft.fisher_diagonal(model, ids, fam, est, targets=data, mask=mask, normalize=normalize)
        close(flat(emp), oracle.terms_at(data)[est].mean(0), f"empirical {est}")
        close(flat(rep.bias(emp)), oracle.terms_at(data)[est].mean(0) - o["fisher"].mean(0), f"empirical bias {est}")
        top = ft.fisher_diagonal(model, ids, fam, est, targets="argmax", mask=mask, normalize=normalize)
        assert top.labels == "argmax"
        want = oracle.terms_at(h.argmax(-1))[est].mean(0) - o["fisher"].mean(0)
        close(flat(rep.bias(top)), want, f"argmax bias {est}")
        gnb = ft.fisher_diagonal(
            model, ids, fam, "i1_sequence", minibatch=3, targets="argmax", mask=mask, normalize=normalize
        )
        g = jacrev(oracle.position_loglik)(oracle.theta, h.argmax(-1))  # (N, T, P)
        summed = (oracle.scale.sqrt()[:, None] * g.sum(1)).sum(0)
        close(flat(gnb), summed.square() / 3, "argmax GNB over the 3 sequences")
    other = ft.fisher_diagonal(
        model, ids, fam, "i1", targets=data, mask=mask, normalize="sequence" if normalize == "token" else "token"
    )
    with pytest.raises(ValueError, match="normalize"):
        rep.bias(other)


def test_ignore_index_masks_like_the_mask():
    model, ids, mask, _, _ = setting("lstm", "token")
    fam = ft.Categorical()
    data = torch.roll(ids, -1, 1)
    ignored = data.masked_fill(~mask, -100)
    a = ft.fisher_diagonal(model, ids, fam, "i1", targets=ignored, normalize="token")
    b = ft.fisher_diagonal(model, ids, fam, "i1", targets=data, mask=mask, normalize="token")
    close(flat(a), flat(b), "ignore index")
    g = ft.fisher_diagonal(model, ids, fam, "i1_sequence", minibatch=3, targets=ignored, normalize="token")
    h = ft.fisher_diagonal(model, ids, fam, "i1_sequence", minibatch=3, targets=data, mask=mask, normalize="token")
    close(flat(g), flat(h), "ignore index, minibatch")


def test_gnb_over_sequences_variance_matches_enumeration():
    """Two inputs in one minibatch: (G_1 + G_2)^2 / 2 over all pairs of label sequences."""
    model, ids, mask, oracle, _ = setting("gru", "token")
    rep = ft.variance_report(model, ids[:2], ft.Categorical(), mask=mask[:2], normalize="token")
    w, s = sequence_scores(SequenceOracle(model, ids[:2], mask[:2], normalize="token"))
    joint = w[:, None, 0] * w[None, :, 1]  # (L, L)
    term = (s[:, None, 0] + s[None, :, 1]).square() / 2
    mean = (joint[..., None] * term).sum((0, 1))
    var = (joint[..., None] * term.square()).sum((0, 1)) - mean.square()
    close(flat(rep.fisher), mean, "GNB mean")
    got = rep.estimator_variance("i1_sequence", minibatch=2, inputs="given")
    close(flat(got), var, "GNB variance")
    with pytest.raises(ValueError, match="i1_sequence"):
        rep.estimator_variance("i1", minibatch=2)


@pytest.mark.parametrize("estimator", ["i1_sequence", "hutchinson"])
def test_minibatch_monte_carlo_matches_the_exact_variance(estimator):
    """Seeded repeats of one-backward GNB/Hutchinson over all 3 sequences: mean and variance within 5 sigma."""
    model, ids, mask, _, _ = setting("gpt", "sequence")
    fam = ft.Categorical()
    rep = ft.variance_report(model, ids, fam, mask=mask)
    var = flat(rep.estimator_variance(estimator, minibatch=3, inputs="given"))
    gen = torch.Generator().manual_seed(11)
    draws = torch.stack(
        [
            flat(ft.fisher_diagonal(model, ids, fam, estimator, minibatch=3, generator=gen, mask=mask))
            for _ in range(400)
        ]
    )
    r = draws.shape[0]
    fisher = flat(rep.fisher)
    live = var > 1e-6 * var.max()
    z = (draws.mean(0) - fisher)[live] / (var[live] / r).sqrt()
    assert z.abs().max() < 5, f"mean off by {z.abs().max():.2f} sigma"
    centred = draws - draws.mean(0)
    m4 = centred.pow(4).mean(0)
    s2 = centred.square().mean(0)
    se = ((m4 - s2.square()) / r).sqrt()
    zv = ((s2 * r / (r - 1) - var)[live] / se[live]).abs().max()
    assert zv < 5, f"variance off by {zv:.2f} standard errors"


def test_hutchinson_per_sequence_mean_and_variance_by_monte_carlo():
    model, ids, mask, _, o = setting("gru", "token")
    fam = ft.Categorical()
    per = ft.per_input_statistics(model, ids, fam, mask=mask, normalize="token")
    r = 2000
    f = ft.fisher_diagonal(
        model,
        ids,
        fam,
        "hutchinson",
        samples_per_input=r,
        generator=torch.Generator().manual_seed(2),
        mask=mask,
        normalize="token",
    )
    var = flat_per_input(per.var_hutchinson).mean(0) / (3 * r)
    live = var > 1e-12 * var.max()
    assert torch.equal(flat(f)[~live], o["fisher"].mean(0)[~live])  # both 0: tokens absent from the batch
    z = ((flat(f) - o["fisher"].mean(0))[live] / var[live].sqrt()).abs().max()
    assert z < 5, f"Hutchinson mean off by {z:.2f} sigma"


def test_gaussian_means_with_positions_match_oracle():
    model = build("gauss")
    x = torch.randn(3, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mask = torch.tensor([[True, True], [False, True], [True, True]])
    fam = ft.Gaussian(0.7)
    for normalize in NORMS:
        o = SequenceOracle(model, x, mask, family="gaussian", normalize=normalize, sigma=0.7).statistics()
        rep = ft.variance_report(model, x, fam, mask=mask, normalize=normalize)
        close(flat(rep.fisher), o["fisher"].mean(0), "gaussian fisher")
        close(flat(rep.var_i1), o["var_tok"].mean(0), "gaussian var_i1")
        close(flat(rep.var_i1_sequence), o["var_seq"].mean(0), "gaussian var_i1_sequence")
        close(flat(rep.var_i2), o["var_i2"].mean(0), "gaussian var_i2")


def test_arguments_are_checked_by_name():
    model, ids, mask, _, _ = setting("gpt", "sequence")
    fam = ft.Categorical()
    with pytest.raises(ValueError, match="normalize must be one of"):
        ft.fisher_diagonal(model, ids, fam, normalize="tokens")
    with pytest.raises(TypeError, match="mask must be a boolean tensor"):
        ft.variance_report(model, ids, fam, mask=mask.long())
    with pytest.raises(ValueError, match="mask has 3 rows but inputs has 2"):
        ft.per_input_statistics(model, ids[:2], fam, mask=mask)
    with pytest.raises(ValueError, match="'i1' is per token"):
        ft.fisher_diagonal(model, ids, fam, "i1", minibatch=3, mask=mask)
    with pytest.raises(ValueError, match="mask is for outputs with positions"):
        flat_model = torch.nn.Sequential(torch.nn.Linear(2, 3)).double()
        ft.fisher_diagonal(flat_model, torch.randn(3, 2, dtype=torch.float64), fam, mask=mask)
    with pytest.raises(ValueError, match="class indices in \\[0, 4\\) or the ignore index -100"):
        ft.fisher_diagonal(model, ids, fam, "i1", targets=ids - 2)


def test_readme_language_model_block_runs_as_printed():
    import pathlib
    import re
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Language models and other sequence outputs") :]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    out = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Warning" not in out.stderr, out.stderr


def test_estimate_plans_and_meets_its_tolerance_with_a_mask():
    model = build("gru")
    ids, mask = left_padded(24, STEPS, VOCAB, [i % 3 for i in range(24)], seed=7)
    fam = ft.Categorical()
    exact = ft.fisher_diagonal(model, ids, fam, mask=mask, normalize="token")
    est = ft.estimate(
        model,
        ids,
        fam,
        rtol=0.5,
        delta=0.1,
        generator=torch.Generator().manual_seed(0),
        estimators=("i1", "hutchinson"),
        mask=mask,
        normalize="token",
    )
    assert {e.estimator for e in est.plan.values()} <= {"i1", "hutchinson"}
    f, e = flat(exact), flat(est)
    live = f > 1e-8 * f.max()
    outside = ((e - f).abs() > 0.5 * f)[live].double().mean().item()
    assert outside <= 0.1, f"{outside:.1%} of the estimates are outside the tolerance, at most 10% allowed"


def test_per_pixel_classes_in_axis_one_fall_back_from_the_graph_engine():
    """A convolutional net with logits (N, C, H, W): the graph engine takes (N, C) outputs only."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 2), torch.nn.Tanh(), torch.nn.Conv2d(2, 3, 1)).double().eval()
    x = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    fam = ft.Categorical(class_axis=1)
    f = ft.fisher_diagonal(net, x, fam)
    assert f.path == "generic"
    with pytest.raises(ft.UnsupportedModelError, match="path='graph' takes outputs \\(N, C\\)"):
        ft.fisher_diagonal(net, x, fam, path="graph")
    # each pixel is a position: the Fisher sums the per-pixel Fishers of the same net on 2x2 crops
    crops = torch.cat([x[:, :, i : i + 2, j : j + 2] for i in range(2) for j in range(2)])
    per_pixel = ft.fisher_diagonal(torch.nn.Sequential(net, torch.nn.Flatten()), crops, ft.Categorical())
    close(flat(f), 4 * flat(per_pixel), "sum over pixels")


@pytest.mark.parametrize("estimator", ["i1", "i1_sequence", "hutchinson"])
def test_sampled_labels_do_not_depend_on_the_batching(estimator):
    model, ids, mask, _, _ = setting("lstm", "sequence")
    fam = ft.Categorical()
    whole = ft.fisher_diagonal(
        model, ids, fam, estimator, samples_per_input=2, generator=torch.Generator().manual_seed(9), mask=mask
    )
    rows = ft.fisher_diagonal(
        model,
        [ids[:1], ids[1:]],
        fam,
        estimator,
        samples_per_input=2,
        generator=torch.Generator().manual_seed(9),
        mask=mask,
        batch_size=1,
    )
    close(flat(rows), flat(whole), "batching")
    a = ft.estimator_terms(model, ids, fam, samples_per_input=2, generator=torch.Generator().manual_seed(9))
    b = ft.estimator_terms(
        model, ids, fam, samples_per_input=2, generator=torch.Generator().manual_seed(9), batch_size=1
    )
    assert torch.equal(a.labels, b.labels)
