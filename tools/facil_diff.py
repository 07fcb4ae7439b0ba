"""Differential check against FACIL's own code (not part of the package; FACIL is not a dependency).

Runs FACIL's approach classes (``src/approach/*.py`` of a FACIL checkout, imported, not copied) and this
project's approaches on the same scene (``tests/facil_scene.py``: the same network weights, old model,
exemplars, batch and hyper-parameters) and compares, per approach: the loss and each of its terms for one
training step, every parameter's gradient, the end-of-task effects (herding exemplars, EWC/MAS/PI/RWalk
importances, BiC's bias parameters, IL2M's statistics, iCaRL's class means) and the predictions on a test
batch. Prints a table (max abs and relative difference per approach and quantity) and, with ``--write``,
stores FACIL's numbers as the golden values ``tests/test_facil_golden.py`` checks on every run.

    git --git-dir=<mirror of mmasana/FACIL> archive HEAD src | tar -x -C /work/facil
    python tools/facil_diff.py --facil /work/facil [--write tests/data/facil_golden.pt] [--only lwm,bic]
"""

from __future__ import annotations

import argparse
import copy
import importlib
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import facil_scene as scene  # noqa: E402


class Transform:
    """FACIL's dataset transform, doing what this project's trainer does to a uint8 image (bit for bit)."""

    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer

    def __call__(self, img: Image.Image) -> torch.Tensor:
        a = torch.from_numpy(np.array(img))
        a = a[None, None] if a.dim() == 2 else a.permute(2, 0, 1)[None]
        return self.trainer.inputs(a)[0].contiguous()


def images(x: torch.Tensor) -> list[np.ndarray]:
    """uint8 [N, 1, H, W] -> FACIL's list of [H, W] arrays (what its MemoryDataset stores)."""
    return [im[0].numpy().copy() for im in x.cpu()]


class Facil:
    """FACIL's modules, imported from a checkout."""

    def __init__(self, root: Path) -> None:
        src = root / "src"
        if not (src / "approach" / "incremental_learning.py").exists():
            sys.exit(f"--facil {root}: no src/approach/incremental_learning.py there (a FACIL checkout's root)")
        sys.path.insert(0, str(src))
        np.float = float  # FACIL's IL2M uses np.float, gone since numpy 1.24
        self.net = importlib.import_module("networks.network")
        self.exds = importlib.import_module("datasets.exemplars_dataset")
        self.memds = importlib.import_module("datasets.memory_dataset")
        self.logger = importlib.import_module("loggers.exp_logger").ExperimentLogger("/tmp", "facil_diff")
        self.appr = {}
        for name in ("finetuning", "freezing", "joint", "lwf", "icarl", "eeil", "bic", "lucir", "il2m", "dmc",
                     "ewc", "mas", "path_integral", "r_walk", "lwm"):
            try:
                self.appr[name] = importlib.import_module(f"approach.{name}")
            except ImportError as err:  # DMC's loaders import optional packages
                print(f"FACIL's {name} cannot be imported: {err}")
        bic = self.appr["bic"]

        class BiasLayer(torch.nn.Module):  # FACIL's BiasLayer allocates on "cuda"; the same on the CPU
            def __init__(self) -> None:
                super().__init__()
                self.alpha = torch.nn.Parameter(torch.ones(1, requires_grad=False))
                self.beta = torch.nn.Parameter(torch.zeros(1, requires_grad=False))

            def forward(self, x):
                return self.alpha * x + self.beta

        bic.BiasLayer = BiasLayer
        lwm = self.appr["lwm"]

        class GradCAM(lwm.GradCAM):
            """FACIL's GradCAM; the layer's output is passed on as a copy, so that the ConvNet's in-place
            ReLU after it leaves the activations FACIL's hook recorded as the layer produced them
            (this project's hook does the same)."""

            def __enter__(self):
                out = super().__enter__()
                self._clone = self.model_layer.register_forward_hook(lambda m, i, o: o.clone())
                return out

            def __exit__(self, *exc):
                self._clone.remove()
                return super().__exit__(*exc)

        lwm.GradCAM = GradCAM

        class MarginRankingLoss(torch.nn.MarginRankingLoss):
            """FACIL's LUCIR passes targets [n] with inputs [n, 1], which the torch of its time broadcast
            (to [n, n], the same mean with all-one targets) and today's torch refuses."""

            def forward(self, input1, input2, target):
                return super().forward(input1, input2, target.view_as(input1))

        nn = types.ModuleType("nn")
        nn.__dict__.update(torch.nn.__dict__)
        nn.MarginRankingLoss = MarginRankingLoss
        self.appr["lucir"].nn = nn

    def network(self, ours: Any, layer: str | None = None, cosine: bool = False) -> Any:
        """FACIL's LLL_Net around a copy of this project's backbone, with copies of its heads."""
        backbone = copy.deepcopy(ours.backbone)
        object.__setattr__(backbone, "head_var", "facil_head")  # LLL_Net reads out_features from it
        object.__setattr__(backbone, "facil_head", types.SimpleNamespace(out_features=ours.out_dim))
        if layer is not None:  # FACIL's GradCAM looks the layer up as an attribute of the backbone
            object.__setattr__(backbone, "layer3", dict(backbone.named_modules())[layer])
        net = self.net.LLL_Net(backbone, remove_existing_head=False)
        for head in ours.heads:
            net.add_head(head.out_features)
            if cosine:
                lucir = self.appr["lucir"]
                net.heads[-1] = lucir.CosineLinear(head.in_features, head.out_features)
                with torch.no_grad():
                    net.heads[-1].weight.copy_(head.weight)
                    net.heads[-1].sigma.copy_(head.sigma)
                if len(net.heads) > 1:
                    net.heads[-1].sigma = net.heads[-2].sigma
            else:
                net.heads[-1].load_state_dict(head.state_dict())
        return net

    def exemplars(self, s: scene.Scene, selection: str) -> Any:
        m = s.exp.memory
        ds = self.exds.ExemplarsDataset(Transform(s.exp.trainer), None, num_exemplars=m.num_exemplars,
                                        num_exemplars_per_class=m.num_exemplars_per_class,
                                        exemplar_selection=selection)
        if m.size:
            ds.images, ds.labels = images(m.x), m.y.tolist()
        return ds


def hyper(s: scene.Scene) -> dict[str, Any]:
    """This project's hyper-parameters as FACIL's constructor arguments."""
    cfg, name = s.ctx.cfg, scene.approach_of(s.variant)
    tc = cfg.train
    common = {"nepochs": 1, "lr": tc.lr, "clipgrad": tc.clipping, "momentum": 0.0, "wd": 0.0}
    sec = cfg.section(name) if name in ("lucir", "ewc", "mas", "path_integral", "r_walk", "icarl", "bic", "lwm",
                                        "eeil") else None
    extra: dict[str, Any] = {
        "finetuning": {"all_outputs": tc.all_outputs},
        "freezing": {"freeze_after": 0, "all_outputs": tc.all_outputs},
        "joint": {"freeze_after": -1},
        "lwf": {"lamb": cfg.loss.lamb, "T": cfg.loss.T},
        "dmc": {},
        "il2m": {},
    }.get(name, {})
    if name == "lucir":
        extra = {"lamb": sec.lamb, "lamb_mr": sec.lamb_mr, "dist": sec.dist, "K": sec.K,
                 "remove_less_forget": not sec.less_forget, "remove_margin_ranking": not sec.margin_ranking,
                 "remove_adapt_lamda": not sec.adapt_lamb}
    elif name == "ewc":
        extra = {"lamb": sec.lamb, "alpha": sec.alpha, "fi_sampling_type": sec.fi_sampling_type,
                 "fi_num_samples": sec.fi_num_samples}
    elif name == "mas":
        extra = {"lamb": sec.lamb, "alpha": sec.alpha, "fi_num_samples": sec.fi_num_samples}
    elif name == "path_integral":
        extra = {"lamb": sec.lamb, "damping": sec.damping}
    elif name == "r_walk":
        extra = {"lamb": sec.lamb, "alpha": sec.alpha, "damping": sec.damping,
                 "fim_sampling_type": sec.fim_sampling_type, "fim_num_samples": sec.fim_num_samples}
    elif name == "icarl":
        extra = {"lamb": sec.lamb}
    elif name == "bic":
        extra = {"T": sec.T, "lamb": sec.lamb, "val_exemplar_percentage": sec.val_exemplar_percentage,
                 "num_bias_epochs": sec.num_bias_epochs}
    elif name == "lwm":
        extra = {"beta": sec.beta, "gamma": sec.gamma, "gradcam_layer": "layer3"}
    elif name == "eeil":
        extra = {"lamb": sec.lamb, "T": sec.T}
    return common | extra


#: per approach: the FACIL attributes that switch every term off, and the one that switches each term on
TERMS: dict[str, tuple[dict[str, float], dict[str, dict[str, float]]]] = {
    "lwf": ({"lamb": 0.0}, {"kd_joint": {"lamb": 1.0}}),
    "lwm": ({"beta": 0.0, "gamma": 0.0}, {"kd_joint": {"beta": 1.0}, "attention": {"gamma": 1.0}}),
    "icarl": ({"lamb": 0.0}, {"bce_distill": {"lamb": 1.0}}),
    "eeil": ({"lamb": 0.0}, {"kd": {"lamb": 1.0}}),
    "bic": ({"lamb": 0.0}, {"kd_joint": {"lamb": 1.0}}),
    "lucir": ({"lamda": 0.0, "lamb_mr": 0.0}, {"less_forget": {"lamda": 1.0}, "margin_ranking": {"lamb_mr": 1.0}}),
    "ewc": ({"lamb": 0.0}, {"penalty": {"lamb": 1.0}}),
    "mas": ({"lamb": 0.0}, {"penalty": {"lamb": 1.0}}),
    "path_integral": ({"lamb": 0.0}, {"penalty": {"lamb": 1.0}}),
    "r_walk": ({"lamb": 0.0}, {"penalty": {"lamb": 1.0}}),
}


def facil_grads(net: Any, trained: list[torch.nn.Parameter] | None = None) -> dict[str, torch.Tensor]:
    """Gradients of the ``trained`` parameters (default: all) under this project's parameter names
    (FACIL's backbone is ``model.``)."""
    ids = {id(p) for p in (net.parameters() if trained is None else trained)}
    return {("backbone." + n[len("model."):] if n.startswith("model.") else n): p.grad.detach().clone()
            for n, p in net.named_parameters() if p.grad is not None and id(p) in ids}


def run_facil(f: Facil, variant: str) -> dict[str, Any]:
    """FACIL's numbers on the scene of ``variant`` (built afresh, so its tensors are untouched by ours)."""
    s = scene.build(variant)
    name = scene.approach_of(variant)
    ours_model, ctx = s.exp.model, s.ctx
    layer = s.approach.layer if name == "lwm" else None
    cosine = name == "lucir"
    net = f.network(ours_model, layer, cosine)
    old = f.network(s.old_plain, layer, cosine)
    old.eval()
    selection = "herding" if name == "icarl" else "random"
    ex = f.exemplars(s, selection)
    mod = f.appr[name]
    out: dict[str, Any] = {}
    if name == "dmc":
        new_model = copy.deepcopy(net).eval()
        st = mod.StudentTrainer(net, new_model, old, "cpu", **hyper(s), logger=f.logger)
        net.train()
        x = s.imp_batches[0][0]
        loss = st.criterion(scene.T, net(x), old(x), new_model(x))
        loss.backward()
        out["loss"] = {"total": loss.detach(), "double_distillation": loss.detach()}
        out["grads"] = facil_grads(net)
        return out
    appr = mod.Appr(net, "cpu", **hyper(s), logger=f.logger, exemplars_dataset=ex)
    t = scene.T
    old_attr = {"lucir": "ref_model"}.get(name, "model_old")
    if name in ("lwf", "lwm", "icarl", "eeil", "bic", "lucir"):
        setattr(appr, old_attr, old)
        if name != "lwm":  # FACIL's LwM keeps its old model's parameters trainable (its Grad-CAM needs a graph)
            old.freeze_all()
        if name == "lucir":  # FACIL's ref model: eval mode, heads in training mode (they return dicts)
            for h in old.heads:
                h.train()
    if name == "lucir":
        if appr.less_forget:
            for h in net.heads[:-1]:
                for p in h.parameters():
                    p.requires_grad = False
            net.heads[-1].sigma.requires_grad = True
        if appr.adapt_lamda:
            appr.lamda = appr.lamb * (sum(h.out_features for h in net.heads[:-1]) / net.heads[-1].out_features) ** 0.5
    if name == "freezing":
        net.freeze_backbone()
    if name == "eeil":
        appr._finetuning_balanced = variant == "eeil@balanced"
    if name == "bic":
        appr.bias_layers = []
        for u in range(t + 1):
            layer_u = mod.BiasLayer()
            with torch.no_grad():
                layer_u.alpha.fill_(float(s.approach.alpha[u]))
                layer_u.beta.fill_(float(s.approach.beta[u]))
            appr.bias_layers.append(layer_u)
    if name in ("ewc", "mas", "path_integral", "r_walk"):
        appr.older_params = {n: v.clone() for n, v in s.state["anchor"].items()}
        for g in s.approach.groups:
            setattr(appr, {"importance": "importance"}.get(g, g), {n: v.clone() for n, v in s.state[g].items()})
    if name == "il2m":
        appr.init_classes_means = [float(v) for v in s.state["init_means"]]
        appr.models_confidence = [float(v) for v in s.state["confidence"]]
    appr.optimizer = appr._get_optimizer()
    zero, units = TERMS.get(name, ({}, {}))
    if name == "lucir" and not appr.less_forget:
        units = {"cosine_mse": units["less_forget"], "margin_ranking": units["margin_ranking"]}
    criterion = appr.criterion
    losses: list[dict[str, torch.Tensor]] = []

    def with_attrs(args: tuple, kwargs: dict, values: dict[str, float]) -> torch.Tensor:
        saved = {k: getattr(appr, k) for k in values}
        for k, v in values.items():
            setattr(appr, k, v)
        try:
            with torch.no_grad():
                return criterion(*args, **kwargs).detach().reshape(())
        finally:
            for k, v in saved.items():
                setattr(appr, k, v)

    def recording(*args, **kwargs):
        """FACIL's criterion, and each of its terms by switching the others off (before the step)."""
        value = criterion(*args, **kwargs)
        ce = with_attrs(args, kwargs, zero)
        losses.append({"total": value.detach().clone().reshape(()), "ce_pred": ce}
                      | {term: with_attrs(args, kwargs, zero | on) - ce for term, on in units.items()})
        return value

    appr.criterion = recording
    for p in net.parameters():
        p.grad = None
    appr.train_epoch(t, [(s.x, s.y)])
    appr.criterion = criterion
    loss = losses[-1]
    out["loss"] = loss
    out["grads"] = facil_grads(net, [p for g in appr.optimizer.param_groups for p in g["params"]])
    end: dict[str, Any] = {}
    batches = s.imp_batches
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.cat([b[0] for b in batches]),
                                                                        torch.cat([b[1] for b in batches])),
                                         batch_size=len(batches[0][1]), shuffle=False)
    if name in ("path_integral", "r_walk"):
        end["w"] = {n: v.clone() for n, v in appr.w.items()}
    if name in ("ewc", "mas", "path_integral", "r_walk"):
        appr.post_train_process(t, loader)
        for g in s.approach.groups:
            end[g] = {n: v.clone() for n, v in getattr(appr, g).items()}
    if name == "bic":
        end.update(bic_stage(appr, s))
    if name == "il2m":
        nx, ny = ctx.task_data("train")
        xs = torch.cat([nx, s.exp.memory.x])
        ys = torch.cat([ny, s.exp.memory.y])
        tr = s.exp.trainer
        appr.il2m(t, [(tr.inputs(xs[i:i + 64]), ys[i:i + 64]) for i in range(0, len(ys), 64)])
        end["init_means"] = torch.tensor(appr.init_classes_means, dtype=torch.float64)
        end["current_means"] = torch.tensor(appr.current_classes_means, dtype=torch.float64)
        end["confidence"] = torch.tensor(appr.models_confidence, dtype=torch.float64)
    if name == "icarl":
        nx, ny = ctx.task_data("train")
        task_ds = f.memds.MemoryDataset({"x": images(nx), "y": ny.tolist()}, Transform(s.exp.trainer))
        trn_loader = torch.utils.data.DataLoader(task_ds + ex, batch_size=64, shuffle=False)
        ex.collect_exemplars(net, trn_loader, Transform(s.exp.trainer))
        appr.exemplar_means = []
        appr.compute_mean_of_exemplars(trn_loader, Transform(s.exp.trainer))
        end["exemplars_y"] = torch.tensor(ex.labels)
        end["exemplars_x"] = torch.from_numpy(np.stack(ex.images))[:, None]
        end["means"] = torch.stack(appr.exemplar_means)
    out["end"] = end
    out["predictions"] = facil_predictions(appr, net, s, name)
    return out


def bic_stage(appr: Any, s: scene.Scene) -> dict[str, torch.Tensor]:
    """FACIL's BiC train_loop with no stage-1 epoch: its hold-out split and its bias stage."""
    t, ctx = scene.T, s.ctx
    nx, ny = ctx.scenario.task_split(t, "train")
    appr.bias_layers = appr.bias_layers[:t]
    held_x, held_y = s.approach.held_x, s.approach.held_y
    appr.x_valid_exemplars = [images(held_x[held_y == c]) for c in range(ctx.offset)]
    appr.y_valid_exemplars = [held_y[held_y == c].tolist() for c in range(ctx.offset)]
    tr = Transform(s.exp.trainer)
    memds = importlib.import_module("datasets.memory_dataset")
    trn = torch.utils.data.DataLoader(memds.MemoryDataset({"x": images(nx), "y": ny.tolist()}, tr),
                                      batch_size=ctx.cfg.train.batch_size, shuffle=True)
    val = torch.utils.data.DataLoader(memds.MemoryDataset({"x": images(nx[:2]), "y": ny[:2].tolist()}, tr),
                                      batch_size=ctx.cfg.train.batch_size)
    appr.nepochs = 0
    appr.exemplars_dataset.collect_exemplars = lambda *args: None  # the stage only, no selection after it
    appr.train_loop(t, trn, val)
    return {"alpha": torch.tensor([float(b.alpha.detach()) for b in appr.bias_layers]),
            "beta": torch.tensor([float(b.beta.detach()) for b in appr.bias_layers])}


def facil_predictions(appr: Any, net: Any, s: scene.Scene, name: str) -> dict[str, torch.Tensor]:
    net.eval()
    with torch.no_grad():
        outputs, feats = net(s.test_x, return_features=True)
        if name == "bic":
            outputs = appr.bias_forward(outputs)
        if name == "icarl":  # FACIL's eval(u, test loader of task u): the task-aware argmax within task u
            task = torch.bucketize(s.test_y, net.task_offset[1:], right=True)
            taw, tag = torch.zeros(len(s.test_y)), torch.zeros(len(s.test_y))
            for u in task.unique().tolist():
                rows = task == u
                taw[rows], tag[rows] = appr.classify(u, feats[rows], s.test_y[rows])
        else:
            taw, tag = appr.calculate_metrics(outputs, s.test_y)
    return {"hits_taw": taw.float(), "hits_tag": tag.float()}


def markdown(rows: list[tuple]) -> str:
    """One row per variant: the largest abs / relative difference of its loss terms, its gradients, its
    end-of-task tensors, and whether the predictions are equal."""
    def cell(sel: list[tuple]) -> str:
        return "—" if not sel else f"{max(r[3] for r in sel):.1e} / {max(r[4] for r in sel):.1e}"

    lines = ["| approach (keys) | terms | loss terms | gradients | end-of-task effects | predictions |",
             "|---|---|---|---|---|---|"]
    for v in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == v]
        terms = ", ".join(r[1].split("/")[1] for r in mine if r[1].startswith("loss/") and r[1] != "loss/total")
        ends = sorted({r[1].split("/")[1] for r in mine if r[1].startswith("end/")})
        keys = ", ".join(f"`{k}: {str(x).lower()}`" for k, x in scene.APPROACHES[v].items()
                         if not k.startswith("memory.") and not k.startswith("bic.num_bias"))
        pred = next((r for r in mine if r[1] == "predictions"), None)
        label = f"{v} ({keys})" if keys else v
        if v in scene.DELIBERATE:
            label += " **deliberate**"
        end = (", ".join(ends) + ": " + cell([r for r in mine if r[1].startswith("end/")])) if ends else "—"
        lines.append(f"| {label} | {terms} | {cell([r for r in mine if r[1].startswith('loss/')])} | "
                     f"{cell([r for r in mine if r[1] == 'grads'])} | {end} | "
                     f"{'—' if pred is None else 'equal' if pred[3] == 0 else 'differ'} |")
    return "\n".join(lines)


def facil_commit(root: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return (root / "COMMIT").read_text().strip() if (root / "COMMIT").exists() else "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--facil", type=Path, required=True, help="root of a FACIL checkout (holds src/)")
    ap.add_argument("--only", default="", help="comma-separated variants (default: all of tests/facil_scene.py)")
    ap.add_argument("--write", type=Path, help="store FACIL's numbers here (the golden values)")
    ap.add_argument("--commit", default="", help="FACIL's commit, for the fixture's header")
    ap.add_argument("--markdown", action="store_true", help="also print one row per approach, as in docs/fidelity.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    f = Facil(args.facil)
    variants = [v for v in args.only.split(",") if v] or list(scene.APPROACHES)
    unknown = [v for v in variants if v not in scene.APPROACHES]
    if unknown:
        ap.error(f"--only {','.join(unknown)}: not a variant; valid: {', '.join(scene.APPROACHES)}")
    results, golden = {}, {}
    for v in variants:
        if scene.approach_of(v) not in f.appr:
            continue
        theirs = run_facil(f, v)
        mine = scene.ours(v)
        results[v] = (theirs, mine)
        if v not in scene.DELIBERATE:  # the golden values: FACIL's numbers where ours must equal them
            golden[v] = theirs
    rows = [(v, *row) for v, (theirs, mine) in results.items() for row in scene.differences(theirs, mine)]
    print(f"{'approach':20} {'quantity':28} {'scale':>9} {'max abs':>9} {'max rel':>9}  within")
    for variant, q, scale, d, r, ok in rows:
        note = "yes" if ok else ("no: deliberate, " + scene.DELIBERATE[variant]
                                 if variant in scene.DELIBERATE else "NO")
        print(f"{variant:20} {q:28} {scale:9.2e} {d:9.2e} {r:9.2e}  {note}")
    if args.markdown:
        print(markdown(rows))
    if args.write:
        commit = args.commit or facil_commit(args.facil)
        header = {"facil_commit": commit, "command": "python tools/facil_diff.py --facil <FACIL checkout> --write "
                  + str(args.write), "torch": str(torch.__version__), "tolerance": scene.TOLERANCE}
        args.write.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"header": header, "facil": golden}, args.write)
        print(f"wrote {args.write} (FACIL {commit})")
    return 0 if all(ok or v in scene.DELIBERATE for v, *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
