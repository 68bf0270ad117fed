"""Two gloo processes on loopback, each with half of the inputs, get the single-process result.

On every entry point that takes ``process_group``: the exact report, GNB with one backward per minibatch (the
ranks' halves are whole minibatches) and ``estimate`` (a plan of ``"exact"``; and, from a sampled pilot, the
same plan and estimate on both ranks).
"""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fishertut as ft


def _problem():
    model = ft.lab.models.mlp([4, 6, 5, 3], "sigmoid", dtype=torch.float64, seed=7)
    x = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 3, (10,), generator=torch.Generator().manual_seed(4))
    return model, x, y


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model, x, y = _problem()
        part, labels = x.chunk(world)[rank], y.chunk(world)[rank]
        fam = ft.Categorical()
        group = dist.group.WORLD
        rep = ft.variance_report(model, part, fam, process_group=group)
        F = ft.fisher_diagonal(model, part, fam, "exact", process_group=group)
        gnb = ft.fisher_diagonal(model, part, fam, "i1", targets=labels, minibatch=5, process_group=group)
        est = ft.estimate(model, part, fam, rtol=1e-3, estimators=("exact", "i1"), process_group=group)
        sampled = ft.estimate(
            model,
            part,
            fam,
            rtol=0.5,
            delta=0.2,
            estimators=("i1", "hutchinson"),
            process_group=group,
            pilot_statistics="sampled",
            generator=torch.Generator().manual_seed(10 + rank),  # each rank draws its own pilot's terms
        )
        out[rank] = {
            "fisher": rep.fisher,
            "var_i1": rep.var_i1,
            "var_i2": rep.var_i2,
            "var_x": rep.var_x,
            "v1_upper": rep.bounds.v1_upper,
            "exact": dict(F),
            "n": rep.num_inputs,
            "gnb": dict(gnb),
            "gnb_n": gnb.num_inputs,
            "estimate": dict(est),
            "plans": {e.estimator for e in est.plan.values()},
            "estimate_n": est.num_inputs,
            "sampled": dict(sampled),
            "sampled_plan": {k: (e.estimator, e.minibatch, e.samples_per_input) for k, e in sampled.plan.items()},
            "sampled_n": sampled.num_inputs,
        }
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_match_single_process():
    model, x, y = _problem()
    fam = ft.Categorical()
    ref = ft.variance_report(model, x, fam)
    gnb = ft.fisher_diagonal(model, x, fam, "i1", targets=y, minibatch=5)
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
        results = dict(out)
    # a sampled pilot: the ranks' moments are all-reduced, so both plan alike and return the same estimate
    assert results[0]["sampled_plan"] == results[1]["sampled_plan"]
    assert results[0]["sampled_n"] == results[1]["sampled_n"] == x.shape[0]
    for k, v in results[0]["sampled"].items():
        torch.testing.assert_close(results[1]["sampled"][k], v, rtol=1e-12, atol=0)
    for rank in (0, 1):
        got = results[rank]
        assert got["n"] == got["gnb_n"] == got["estimate_n"] == x.shape[0] and got["plans"] == {"exact"}
        for field, want in (
            ("fisher", ref.fisher),
            ("var_i1", ref.var_i1),
            ("var_i2", ref.var_i2),
            ("var_x", ref.var_x),
            ("v1_upper", ref.bounds.v1_upper),
            ("exact", ref.fisher),
            ("gnb", gnb),
            ("estimate", ref.fisher),
        ):
            for k in want:
                # var_x = mean(I^2) - fisher^2 carries an absolute error of about eps * fisher^2
                atol = 1e-12 * ref.fisher[k].square().max().item() if field == "var_x" else 1e-300
                torch.testing.assert_close(got[field][k], want[k], rtol=1e-12, atol=atol)
