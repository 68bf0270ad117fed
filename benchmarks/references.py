r"""The peers fishertut is timed against, on the workload of :mod:`benchmarks.workload`.

Every peer returns plain ``{parameter name: tensor}`` dicts (or dicts of them) averaged over the ``N`` inputs,
like the fishertut calls it is compared to (:func:`benchmarks.registry.check_agreement`). Notation of the
book: :math:`v_i = \partial h/\partial\theta_i` (``J`` below, per class),
:math:`u_i = \partial^2 h/\partial\theta_i^2` (``G``), :math:`\Lambda = \mathrm{diag}(p)-pp^\top`.

Peers:

* :class:`BackpackPeer`: BackPACK 1.7.1 extensions on its own ``extend``-ed deep copy of the model, with
  ``CrossEntropyLoss(reduction="sum")`` and the sum divided by ``N`` here; data fed in batches of
  ``batch_size`` inputs (``None``: all ``N`` in one backward pass).
* :class:`TorchFuncReport`: a ``torch.func`` brute force of :func:`fishertut.variance_report`: per-sample
  Jacobians ``vmap(jacrev)`` w.r.t. every parameter (``B × C × P`` per chunk of ``B`` inputs) and per-class
  second derivatives from the per-sample Hessians of the outputs w.r.t. each Linear layer's
  pre-activations ``vmap(jacfwd(jacrev))``; since :math:`z = Wa + b` is linear in :math:`W`,
  :math:`\partial^2 h_c/\partial W_{jk}^2 = a_k^2\,[\partial^2 h_c/\partial z^2]_{jj}` (a fully generic
  :math:`P` forward-over-forward passes per input would take hours for this network). The report's
  reductions and the output-space eigenvalues are written out here independently of fishertut.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacfwd, jacrev, vmap

from benchmarks.workload import REPORT_FIELDS, Params, Problem

__all__ = ["BackpackPeer", "TorchFuncReport"]


class BackpackPeer:
    """BackPACK extensions on their own extended deep copy of ``problem.model`` (extend() breaks torch.func).

    Args:
        problem: the benchmark problem (its labels are the ones BackPACK's losses see).
        batch_size: inputs per backward pass; ``None`` for all ``N`` at once.
    """

    def __init__(self, problem: Problem, batch_size: int | None = None) -> None:
        from backpack import extend

        self.problem = problem
        self.batch_size = batch_size
        self.model = extend(copy.deepcopy(problem.model))
        self.loss = extend(nn.CrossEntropyLoss(reduction="sum"))
        self.names = [n for n, _ in self.model.named_parameters()]

    def _batches(self, max_batches: int | None) -> list[tuple[Tensor, Tensor]]:
        x, y = self.problem.x, self.problem.labels
        step = self.batch_size or x.shape[0]
        out = [(x[s : s + step], y[s : s + step]) for s in range(0, x.shape[0], step)]
        return out if max_batches is None else out[:max_batches]

    def _sum(
        self, extension: object, attribute: str, max_batches: int | None = None, batch_stats: bool = False
    ) -> tuple[Params, Params | None, int]:
        """Sum of ``p.<attribute>`` over the batches (over the batch axis too if ``batch_stats``)."""
        from backpack import backpack

        total: Params = {}
        squares: Params | None = {} if batch_stats else None
        count = 0
        for xb, yb in self._batches(max_batches):
            self.model.zero_grad(set_to_none=True)
            with backpack(extension):
                self.loss(self.model(xb), yb).backward()
            count += xb.shape[0]
            for name, prm in zip(self.names, self.model.parameters()):
                value = getattr(prm, attribute)
                if batch_stats:
                    squares[name] = squares.get(name, 0) + value.square().sum(0)
                    value = value.sum(0)
                total[name] = total.get(name, 0) + value
                delattr(prm, attribute)
        return total, squares, count

    def diag_ggn_exact(self, max_batches: int | None = None) -> Params:
        """``DiagGGNExact``: the exact diagonal FIM (labels are not used), divided by ``N``."""
        from backpack.extensions import DiagGGNExact

        total, _, n = self._sum(DiagGGNExact(), "diag_ggn_exact", max_batches)
        return {k: v / n for k, v in total.items()}

    def sum_grad_squared(self, max_batches: int | None = None) -> Params:
        """``SumGradSquared`` on the sampled labels: Î1, divided by ``N``."""
        from backpack.extensions import SumGradSquared

        total, _, n = self._sum(SumGradSquared(), "sum_grad_squared", max_batches)
        return {k: v / n for k, v in total.items()}

    def diag_hessian(self, max_batches: int | None = None) -> Params:
        """``DiagHessian`` on the sampled labels: Î2, divided by ``N``."""
        from backpack.extensions import DiagHessian

        total, _, n = self._sum(DiagHessian(), "diag_h", max_batches)
        return {k: v / n for k, v in total.items()}

    def batch_diag_hessian(self, max_batches: int | None = None) -> dict[str, Params]:
        """``BatchDiagHessian`` on the sampled labels: the per-input Î2 terms, reduced batch by batch.

        Keeping all ``N × P`` terms would need 9.7 GB at ``N = 10,000``; what a user of BackPACK would keep
        to judge Î2 is their mean and mean square, i.e. Î2 and the spread of its single-label terms
        (an unbiased estimate of ``var_x + var_i2`` of the report, from one label per input).

        Returns:
            ``{"mean": Î2, "mean_square": mean of the squared terms}``.
        """
        from backpack.extensions import BatchDiagHessian

        total, squares, n = self._sum(BatchDiagHessian(), "diag_h_batch", max_batches, batch_stats=True)
        return {"mean": {k: v / n for k, v in total.items()}, "mean_square": {k: v / n for k, v in squares.items()}}

    def batch_diag_hessian_terms(self, max_batches: int | None = None) -> Params:
        """``BatchDiagHessian`` per-input terms ``(N, *shape)`` (for agreement checks on a few inputs)."""
        from backpack import backpack
        from backpack.extensions import BatchDiagHessian

        parts: dict[str, list[Tensor]] = {k: [] for k in self.names}
        for xb, yb in self._batches(max_batches):
            self.model.zero_grad(set_to_none=True)
            with backpack(BatchDiagHessian()):
                self.loss(self.model(xb), yb).backward()
            for name, prm in zip(self.names, self.model.parameters()):
                parts[name].append(prm.diag_h_batch)
                del prm.diag_h_batch
        return {k: torch.cat(v, 0) for k, v in parts.items()}


# --- torch.func brute force of the variance report -------------------------------------------------------


class TorchFuncReport:
    """Brute-force :func:`fishertut.variance_report` with ``torch.func``, chunked over inputs (module docstring).

    Args:
        problem: the benchmark problem (labels are not used: the report averages over all labels).
        chunk_size: inputs per chunk; memory is about ``6 × chunk_size × C × P`` floats.
    """

    def __init__(self, problem: Problem, chunk_size: int = 16) -> None:
        self.problem = problem
        self.chunk_size = chunk_size
        self.model = copy.deepcopy(problem.model)
        self.params = {n: p.detach() for n, p in self.model.named_parameters()}
        layers = list(self.model)
        self.linears = [(i, m) for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
        if len(self.linears) == 0 or any(not isinstance(m, (nn.Linear, nn.Sigmoid, nn.Tanh, nn.ReLU)) for m in layers):
            raise ValueError("TorchFuncReport needs an MLP of Linear layers and elementwise activations")
        self.layers = layers

    def _output(self, params: Params, x: Tensor) -> Tensor:
        return functional_call(self.model, params, (x.unsqueeze(0),)).squeeze(0)

    def _second_derivatives(self, x: Tensor) -> Params:
        r"""Per-sample, per-class :math:`\partial^2 h_c/\partial\theta_i^2`: ``{name: (B, C, numel)}``."""
        out: Params = {}
        a = x
        for i, layer in enumerate(self.layers):
            if isinstance(layer, nn.Linear):
                z = layer(a)
                rest = nn.Sequential(*self.layers[i + 1 :])

                def head(zi: Tensor, rest: nn.Module = rest) -> Tensor:
                    return rest(zi.unsqueeze(0)).squeeze(0)

                hess = vmap(jacfwd(jacrev(head)))(z)  # (B, C, n_out, n_out)
                gz = hess.diagonal(dim1=-2, dim2=-1)  # (B, C, n_out)
                out[f"{i}.weight"] = (gz.unsqueeze(-1) * a.square()[:, None, None, :]).flatten(2)
                if layer.bias is not None:
                    out[f"{i}.bias"] = gz
                a = z
            else:
                a = layer(a)
        return out

    @staticmethod
    def _spectrum(p: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``cov_min, cov_max, m_min, m_max`` per input, from explicit ``C × C`` and ``C² × C²`` matrices."""
        n, c = p.shape
        lam = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        ev = torch.linalg.eigvalsh(lam)
        eps = torch.eye(c, dtype=p.dtype, device=p.device) - p[:, None, :]  # rows: eps_c = e_c - p
        m = (eps[:, :, :, None] * eps[:, :, None, :]).reshape(n, c, c * c)  # vec(eps_c eps_c^T)
        centred = (m - (p[:, :, None] * m).sum(1, keepdim=True)) * p.sqrt()[:, :, None]
        big = centred.transpose(1, 2) @ centred  # M, (C^2 x C^2)
        m_max = torch.linalg.eigvalsh(big)[:, -1].clamp_min(0)
        m_min = m_max if c == 2 else torch.zeros_like(m_max)
        return ev[:, 1].clamp_min(0), ev[:, -1], m_min, m_max

    def __call__(self, max_chunks: int | None = None) -> dict[str, Params]:
        """The report fields (``REPORT_FIELDS``) averaged over the inputs, accumulated in float64."""
        x_all = self.problem.x
        sums: dict[str, Params] = {f: {} for f in REPORT_FIELDS + ("fisher_sq",)}
        count = 0
        for c_index, s in enumerate(range(0, x_all.shape[0], self.chunk_size)):
            if max_chunks is not None and c_index >= max_chunks:
                break
            x = x_all[s : s + self.chunk_size]
            count += x.shape[0]
            with torch.no_grad():
                h = self.model(x)
            prob = torch.softmax(h, 1)
            cov_min, cov_max, m_min, m_max = self._spectrum(prob)
            jac = vmap(jacrev(self._output), in_dims=(None, 0))(self.params, x)
            curv = self._second_derivatives(x)
            pw = prob[:, :, None]
            for name in self.params:
                j = jac[name].flatten(2)  # (B, C, numel)
                g = curv[name]
                d2 = (j - (pw * j).sum(1, keepdim=True)).square()
                fisher = (pw * d2).sum(1)  # I(theta|x) = sum_c p_c (v_c - vbar)^2
                var_i1 = (pw * (d2 - fisher[:, None]).square()).sum(1)  # Var_y (eps^T v)^2
                var_i2 = (pw * (g - (pw * g).sum(1, keepdim=True)).square()).sum(1)  # u^T Lambda u
                pj = (j - j.mean(1, keepdim=True)).square().sum(1).square()  # ||Pi v||^4
                pg = (g - g.mean(1, keepdim=True)).square().sum(1)  # ||Pi u||^2
                values = {
                    "fisher": fisher,
                    "fisher_sq": fisher.square(),
                    "var_i1": var_i1,
                    "var_i2": var_i2,
                    "v1_lower": m_min[:, None] * pj,
                    "v1_upper": m_max[:, None] * pj,
                    "v2_lower": cov_min[:, None] * pg,
                    "v2_upper": cov_max[:, None] * pg,
                }
                for field, v in values.items():
                    part = v.sum(0).to(torch.float64)
                    sums[field][name] = sums[field][name] + part if name in sums[field] else part
        shapes = {n: p.shape for n, p in self.params.items()}
        dtype = x_all.dtype
        mean = {f: {n: (v / count).reshape(shapes[n]) for n, v in d.items()} for f, d in sums.items()}
        fisher_sq = mean.pop("fisher_sq")
        mean["var_x"] = {n: (fisher_sq[n] - mean["fisher"][n].square()).clamp_min(0) for n in shapes}
        return {f: {n: v.to(dtype) for n, v in mean[f].items()} for f in REPORT_FIELDS}
