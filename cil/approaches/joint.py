"""Joint training: the upper bound, all data of the tasks seen so far, scored over all heads."""

from __future__ import annotations

import torch

from cil.approaches.base import Approach
from cil.data import Scenario
from cil.memory import ExemplarMemory


def _union(scenario: Scenario, t: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [scenario.task_split(u, split) for u in range(t + 1)]
    return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


class Joint(Approach):
    name = "joint"
    uses_memory = False

    def use_all_outputs(self, memory: ExemplarMemory) -> bool:
        return True

    def training_set(self, t: int, scenario: Scenario, memory: ExemplarMemory) -> tuple[torch.Tensor, torch.Tensor]:
        return _union(scenario, t, "train")

    def validation_set(self, t: int, scenario: Scenario) -> tuple[torch.Tensor, torch.Tensor]:
        return _union(scenario, t, "val")
