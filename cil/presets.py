"""The paper's variants as data: loss-weight presets of the LwF family (the table of docs/design.md).

L = ce_pred + w_bce_pred * bce_pred + lamb * (w_joint * kd_joint + w_task * kd_task + w_bce_kd * bce_kd)
"""

LOSS_WEIGHT_NAMES = ("w_joint", "w_task", "w_bce_kd", "w_bce_pred")

# FACIL's LwF defaults: lamb = 1, T = 2 (T lives in LossConfig's default).
LWF_PRESETS: dict[str, dict[str, float]] = {
    "lwf": {"lamb": 1.0, "w_joint": 1.0, "w_task": 0.0, "w_bce_kd": 0.0, "w_bce_pred": 0.0},
    "lwf-s": {"lamb": 1.0, "w_joint": 0.0, "w_task": 1.0, "w_bce_kd": 0.0, "w_bce_pred": 0.0},
    "lwf-sr": {"lamb": 1.0, "w_joint": 0.5, "w_task": 1.0, "w_bce_kd": 0.0, "w_bce_pred": 0.0},
    "lwf-br": {"lamb": 1.0, "w_joint": 1.0, "w_task": 0.0, "w_bce_kd": 1.0, "w_bce_pred": 0.0},
    "lwf-br2": {"lamb": 1.0, "w_joint": 1.0, "w_task": 0.0, "w_bce_kd": 1.0, "w_bce_pred": 1.0},
    "lwf-bsr": {"lamb": 1.0, "w_joint": 1.0, "w_task": 1.0, "w_bce_kd": 0.5, "w_bce_pred": 0.0},
}

BASELINE_APPROACHES = ("finetuning", "freezing", "joint")
APPROACHES = (*BASELINE_APPROACHES, *LWF_PRESETS)
