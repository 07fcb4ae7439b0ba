"""Path Integral, a.k.a. Synaptic Intelligence (Zenke et al., ICML 2017), with FACIL's semantics.

    L = ce_pred + path_integral.lamb * sum_i Omega_i (p_i - p*_i)^2

over the backbone's parameters. During task t, ``w_i = -sum_steps g_i * delta_p_i`` (``g`` the gradient of
the cross-entropy alone, ``delta_p`` the step's parameter update); after it,
``Omega_i += w_i / ((p_i - p*_i)^2 + damping)``. As in FACIL, ``Omega`` is not clipped at zero (with plain
SGD at task 0, ``w = lr * sum g^2`` is non-negative; momentum and the penalty's pull can make single
entries negative).
"""

from __future__ import annotations

from cil.approaches.base import TaskContext
from cil.approaches.importance import PathIntegralPenalty


class PathIntegral(PathIntegralPenalty):
    section = "path_integral"

    def update_importance(self, ctx: TaskContext) -> None:
        damping = self.settings(ctx).damping
        moved = self.parameter_change(ctx)
        self.store["importance"] = {n: v + self.w[n] / (moved[n] + damping)
                                    for n, v in self.store["importance"].items()}
