"""What an approach adds to the shared training loop (cil.training): its loss, its trainable
parameters and its training data. Every approach takes the one experiment config, nothing else."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from cil.config import ExperimentConfig
from cil.data import Scenario
from cil.memory import ExemplarMemory
from cil.networks import IncrementalNet


class Approach:
    """FACIL's finetuning behaviour; subclasses override the parts they change."""

    name = "finetuning"
    uses_memory = True
    needs_old_model = False

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg

    # ---- what is trained, on what -------------------------------------------------------------
    def use_all_outputs(self, memory: ExemplarMemory) -> bool:
        """FACIL: cross-entropy over every head once exemplars are stored (or when asked)."""
        return self.cfg.train.all_outputs or (self.uses_memory and memory.size > 0)

    def train_parameters(self, model: IncrementalNet, t: int, memory: ExemplarMemory) -> Iterable[torch.nn.Parameter]:
        """FACIL's finetuning leaves old heads out of the optimizer when only the new head is scored."""
        if t > 0 and not self.use_all_outputs(memory):
            return [*model.backbone.parameters(), *model.heads[t].parameters()]
        return model.parameters()

    def training_set(self, t: int, scenario: Scenario, memory: ExemplarMemory) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = scenario.task_split(t, "train")
        if self.uses_memory and memory.size > 0:
            x, y = torch.cat([x, memory.x.to(x.device)]), torch.cat([y, memory.y.to(y.device)])
        return x, y

    def validation_set(self, t: int, scenario: Scenario) -> tuple[torch.Tensor, torch.Tensor]:
        return scenario.task_split(t, "val")

    def before_task(self, t: int, model: IncrementalNet) -> None:
        """Hook run once the new head exists, before the optimizer is built."""

    def set_train_mode(self, model: IncrementalNet, t: int) -> None:
        model.train()

    # ---- the loss ------------------------------------------------------------------------------
    def prediction_loss(self, t: int, outputs: list[torch.Tensor], targets: torch.Tensor, offset: int,
                        all_outputs: bool) -> torch.Tensor:
        """ce_pred: CE on the current head, or on all heads with exemplars / all_outputs."""
        if all_outputs:
            return F.cross_entropy(torch.cat(outputs, dim=1).float(), targets)
        return F.cross_entropy(outputs[t].float(), targets - offset)

    def criterion(self, t: int, outputs: list[torch.Tensor], targets: torch.Tensor,
                  old_outputs: list[torch.Tensor] | None, offset: int, all_outputs: bool) -> torch.Tensor:
        return self.prediction_loss(t, outputs, targets, offset, all_outputs)
