"""Issue 8: long-tailed subsets, samplers, BBN, Decoupling (cRT, LWS, tau-norm, NCM), shot splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare
from typer.testing import CliRunner

import imgcls_cli as ic
from imgcls_cli.config import build_config
from imgcls_cli.data.longtail import longtail_counts, longtail_indices
from imgcls_cli.data.samplers import EpochSampler
from imgcls_cli.engine.checkpoint import read_checkpoint
from imgcls_cli.engine.evaluator import shot_split
from imgcls_cli.errors import ImgclsError
from imgcls_cli.methods import build_task_model
from imgcls_cli.methods.bbn import bbn_alpha
from imgcls_cli.methods.decoupling_eval import NCM_METRICS, TAUS, TauNorm, build_ncm, pick_tau
from imgcls_cli.models.build import forward_with_features, get_classifier
from imgcls_cli.registry import SAMPLERS

from .conftest import make_folder_dataset, quick_overrides, shared

COUNTS = np.array([400, 200, 100, 50, 20, 10])
LABELS = np.repeat(np.arange(len(COUNTS)), COUNTS)


def lt_folder(root: Path, counts: tuple[int, ...] = (120, 30, 8), val: int = 6) -> Path:
    """A tiny long-tailed folder: many (>100), medium (20-100) and few (<20) training classes."""
    make_folder_dataset(root, classes=len(counts), train=max(counts), val=val, size=32)
    for c, n in enumerate(counts):
        for f in sorted((root / "train" / f"class_{c}").iterdir())[n:]:
            f.unlink()
    return root


def quick(data: Path, **extra: object) -> dict[str, object]:
    return quick_overrides(**{"data.path": str(data), "data.img_size": 32, **extra})


# ---------------------------------------------------------------- long-tailed subsets
def test_cifar10_lt_counts_r100():
    want = [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]
    assert longtail_counts(1000, 10, 100) == want
    labels = np.repeat(np.arange(10), 1000)
    idx = longtail_indices(labels, 10, 100.0)
    assert np.bincount(labels[idx]).tolist() == want
    assert np.array_equal(idx, longtail_indices(labels, 10, 100.0))  # deterministic
    assert longtail_counts(1000, 10, 100, "step") == [1000] * 5 + [10] * 5


def test_cifar10_jpg_long_tailed_bundle():
    from imgcls_cli.data.sources import open_data

    root = shared("cifar10_jpg")
    cfg = build_config(None, {"data.path": str(root), "data.imbalance_ratio": 100})
    b = open_data(cfg.data)
    # the selection split (no val/ here) is 20 a class from the training images the subset leaves unused; this
    # copy has 1000 training images a class, so class 0 (all 1000 kept) gives its 20 from the kept ones
    assert b.select_split == "carve"
    assert b.class_counts() == [980, 599, 359, 215, 129, 77, 46, 27, 16, 10]
    assert np.bincount(b.select.labels).tolist() == [20] * 10
    assert not set(b.select.indices.tolist()) & set(b.train.indices.tolist())  # both index the full training split
    assert np.bincount(b.val.labels).tolist() == [1000] * 10  # the test split stays balanced and is never selected on
    full = open_data(build_config(None, {"data.path": str(root), "data.imbalance_ratio": 100,
                                         "data.select_split": "none"}).data)
    assert full.class_counts() == [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]


# ---------------------------------------------------------------- samplers
def expected_probs(name: str, epoch: int = 0, total: int = 10) -> np.ndarray:
    n = COUNTS.astype(float)
    ib, cb = n / n.sum(), np.full(len(n), 1 / len(n))
    return {"instance": ib, "class_balanced": cb, "sqrt": np.sqrt(n) / np.sqrt(n).sum(),
            "progressive": (1 - epoch / total) * ib + epoch / total * cb,
            "reversed": (n.max() / n) / (n.max() / n).sum()}[name]


def draw_classes(s: EpochSampler, epochs: range) -> np.ndarray:
    out = []
    for e in epochs:
        s.set_epoch(e)
        out += [LABELS[i] for i, _ in s]
    return np.bincount(out, minlength=len(COUNTS))


@pytest.mark.parametrize("name", ["instance", "class_balanced", "sqrt", "reversed"])
def test_sampler_class_frequencies_match_formula(name: str):
    s = SAMPLERS.get(name)(LABELS, len(COUNTS), seed=3)
    obs = draw_classes(s, range(20))  # 20 x 780 draws
    exp = expected_probs(name) * obs.sum()
    if name == "instance":
        assert obs.tolist() == (COUNTS * 20).tolist()  # every image exactly once per epoch
    else:
        assert chisquare(obs, exp).pvalue > 1e-3, (obs, exp.round())
        assert not np.allclose(obs / obs.sum(), COUNTS / COUNTS.sum(), atol=0.02)  # it really re-balances


@pytest.mark.parametrize("name", ["instance", "class_balanced", "progressive", "reversed"])
def test_distributed_shards_union_is_the_global_draw(name: str):
    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)  # 780 items: even, no padding
    single = SAMPLERS.get(name)(labels, len(COUNTS), seed=5, total_epochs=10)
    ranks = [SAMPLERS.get(name)(labels, len(COUNTS), seed=5, num_replicas=2, rank=r, total_epochs=10) for r in (0, 1)]
    for e in (0, 4):
        for s in (single, *ranks):
            s.set_epoch(e)
        whole = [i for i, _ in single]
        parts = [[i for i, _ in r] for r in ranks]
        assert len(parts[0]) == len(parts[1]) == len(whole) // 2
        assert sorted(parts[0] + parts[1]) == sorted(whole)
        assert parts[0] == whole[0::2] and parts[1] == whole[1::2]


def test_progressive_depends_on_epoch():
    s = SAMPLERS.get("progressive")(LABELS, len(COUNTS), seed=1, total_epochs=10)
    for e in (0, 5, 10):
        assert np.allclose(s.class_probabilities(e), expected_probs("progressive", e, 10))
    early, late = draw_classes(s, range(0, 3)), draw_classes(s, range(8, 10))
    assert chisquare(early, expected_probs("progressive", 1, 10) * early.sum()).pvalue > 1e-3
    assert late[-1] / late.sum() > 3 * early[-1] / early.sum()  # the tail gets more draws later


# ---------------------------------------------------------------- shot split
def test_shot_split_boundaries():
    counts = [101, 100, 20, 19]  # many, medium, medium, few
    conf = torch.zeros(4, 4, dtype=torch.long)
    right = [9, 6, 4, 1]
    for c in range(4):
        conf[c, c], conf[c, (c + 1) % 4] = right[c], 10 - right[c]
    s = shot_split(conf, counts)
    assert s["many"] == pytest.approx(90.0)
    assert s["medium"] == pytest.approx(50.0)
    assert s["few"] == pytest.approx(10.0)
    assert shot_split(conf, [500, 400, 300, 200])["few"] is None


# ---------------------------------------------------------------- tau-norm / NCM
def test_tau_zero_is_the_bias_free_classifier():
    torch.manual_seed(0)
    cfg = build_config(None, {"model.backbone": "resnet20"})
    model = build_task_model(cfg, 5).eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        fc = get_classifier(model)
        fc.bias.zero_()
        logits, feats = forward_with_features(model, x)  # (6, 5), (6, 64)
        z0 = TauNorm(fc.weight, 0.0)(logits, feats)
        assert torch.allclose(z0, logits, atol=1e-5)
        assert torch.equal(z0.argmax(1), logits.argmax(1))
        fc.bias.normal_()  # with a bias, tau = 0 drops it and changes nothing else
        assert torch.allclose(TauNorm(fc.weight, 0.0)(None, feats), feats @ fc.weight.T, atol=1e-5)
        z1 = TauNorm(fc.weight, 1.0)(None, feats)
        assert torch.allclose(z1, feats @ F.normalize(fc.weight, dim=1).T, atol=1e-5)


def test_pick_tau_scores_every_step_and_takes_the_best():
    g = torch.Generator().manual_seed(0)
    d = torch.eye(8)[:4]  # (4, 8) class directions
    w = d * torch.tensor([[8.0], [4.0], [1.0], [0.5]])  # head classes have big weight norms (long-tail bias)
    targets = torch.arange(4).repeat(25)  # balanced val
    feats = d[targets] + 0.5 * torch.randn(100, 8, generator=g)  # (100, 8)
    tau, scores = pick_tau(w, feats, targets)
    assert list(scores) == [f"{t:.1f}" for t in TAUS] and len(TAUS) == 21
    assert scores[f"{tau:.1f}"] == max(scores.values())
    assert scores[f"{tau:.1f}"] > scores["0.0"]  # normalising the big head norms helps here


def _ncm_reference(train: np.ndarray, labels: np.ndarray, query: np.ndarray, feat_type: str) -> np.ndarray:
    """The official KNNClassifier (classifier-balancing) written out in numpy: the feature transform applied to
    the training embeddings before the class means and to each query, logit = -squared Euclidean distance."""
    mean = train.mean(0)

    def g(f: np.ndarray) -> np.ndarray:
        f = f - mean if feat_type == "cl2n" else f
        return f / np.linalg.norm(f, axis=1, keepdims=True) if feat_type in ("l2n", "cl2n") else f

    cents = np.stack([g(train)[labels == c].mean(0) for c in range(labels.max() + 1)])
    return -((g(query)[:, None, :] - cents[None]) ** 2).sum(-1)


def test_ncm_follows_the_official_cl2n() -> None:
    # embeddings with a large shared offset (as post-ReLU features have): centring changes the decisions
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    protos = rng.normal(size=(3, 8))
    train = (8.0 + protos[labels] * np.array([1.0, 0.5, 0.25])[labels, None] + rng.normal(size=(60, 8)) * 0.6)
    query = 8.0 + protos[rng.integers(0, 3, 200)] * 0.5 + rng.normal(size=(200, 8)) * 0.6
    tf, tl = torch.tensor(train, dtype=torch.float32), torch.tensor(labels)
    tq = torch.tensor(query, dtype=torch.float32)
    preds = {}
    for name, feat_type in (("ncm", "cl2n"), ("ncm-l2n", "l2n"), ("ncm-un", "un")):
        z = build_ncm(tf, tl, 3, name)(None, tq)
        ref = _ncm_reference(train, labels, query, feat_type)
        torch.testing.assert_close(z, torch.tensor(ref, dtype=torch.float32), rtol=1e-4, atol=1e-4)
        preds[name] = z.argmax(1)
    assert (preds["ncm"] != preds["ncm-l2n"]).sum() >= 5  # the data tell centring from plain normalisation
    zc = build_ncm(tf, tl, 3, "ncm-cosine")(None, tq)
    assert zc.abs().max() <= 1 + 1e-5


def test_ncm_class_without_images() -> None:
    feats = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    for name in NCM_METRICS:
        z = build_ncm(feats, torch.tensor([0, 0, 1, 1]), 3, name)(None, torch.tensor([[5.0, 0.5], [0.2, 1.0]]))
        assert torch.isinf(z[:, 2]).all() and z[:, :2].isfinite().all()


# ---------------------------------------------------------------- BBN
def test_bbn_alpha_schedules():
    assert bbn_alpha(0, 10) == pytest.approx(1 - 0.01)
    assert bbn_alpha(4, 10) == pytest.approx(1 - 0.25)
    assert bbn_alpha(9, 10) == pytest.approx(0.0)
    assert bbn_alpha(0, 200, "official") == 1.0
    assert bbn_alpha(100, 200, "official") == pytest.approx(0.75)
    assert bbn_alpha(90, 180, "official") == pytest.approx(1 - (90 / 200) ** 2)  # rounded-up T_max
    assert bbn_alpha(45, 90, "official") == pytest.approx(1 - (45 / 100) ** 2)
    a = [bbn_alpha(e, 50) for e in range(50)]
    assert all(x > y for x, y in zip(a, a[1:], strict=False))


def test_bbn_model_and_validation():
    torch.manual_seed(0)
    model = build_task_model(build_config(None, {"model.backbone": "resnet32", "train.method": "bbn"}), 10).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), model(x, x, 0.5), atol=1e-5)  # test = alpha 0.5 on both branches
        last = model.backbone.layer3[-1]
        assert not torch.equal(last.conv1.weight, model.rb_block.conv1.weight)  # independent branches
    assert forward_with_features(model, x)[1].shape == (3, 128)
    with pytest.raises(ImgclsError, match="--method bbn supports resnet/cifar_resnet.*vgg11"):
        build_config(None, {"model.backbone": "vgg11", "train.method": "bbn"})
    with pytest.raises(ImgclsError, match="Mixup"):
        build_config(None, {"train.method": "bbn", "aug.mixup": 1.0})


def test_bbn_trains_with_the_reversed_stream(tmp_path: Path):
    data = lt_folder(tmp_path / "lt", counts=(40, 12, 4), val=3)
    res = ic.train(**quick(data, **{"train.method": "bbn", "train.epochs": 2,
                                        "train.out": str(tmp_path / "bbn")}))
    ck = ic.load_checkpoint(res.run_dir / "last.pt")
    assert "rb_block.conv1.weight" in ck.model.state_dict()
    assert ck.class_counts == [40, 12, 4]
    assert res.epochs_run == 2


def _bbn_features(model: torch.nn.Module, x: torch.Tensor, rb: bool) -> torch.Tensor:
    """ResNet-32 written out: stem, layer1, layer2, layer3 but its last block, then the branch's own last block."""
    b = model.backbone
    t = b.layer2(b.layer1(b.relu(b.bn1(b.conv1(x)))))
    for block in list(b.layer3)[:-1]:
        t = block(t)
    last = model.rb_block if rb else b.layer3[-1]
    return torch.flatten(b.avgpool(last(t)), 1)  # (B, 64)


def test_bbn_logits_are_twice_the_weighted_concatenation():
    # eq. 3 with the official code's factor 2: z = W^T (2 [alpha f_c(x) ; (1 - alpha) f_r(x2)]) + b;
    # at test time alpha = 0.5 on one image, i.e. the classifier of the plain [f_c ; f_r]
    torch.manual_seed(0)
    model = build_task_model(build_config(None, {"model.backbone": "resnet32", "train.method": "bbn"}), 10).eval()
    g = torch.Generator().manual_seed(1)
    x, x2 = torch.randn(3, 3, 32, 32, generator=g), torch.randn(3, 3, 32, 32, generator=g)
    fc = model.backbone.fc
    with torch.no_grad():
        f_c, f_r = _bbn_features(model, x, False), _bbn_features(model, x, True)
        assert float((f_c - f_r).abs().max()) > 1e-2  # the branches differ, so their order matters
        torch.testing.assert_close(model(x), fc(torch.cat([f_c, f_r], 1)), rtol=1e-4, atol=1e-5)
        f_r2 = _bbn_features(model, x2, True)  # the re-balancing branch sees the second stream's images
        want = fc(2 * torch.cat([0.3 * f_c, 0.7 * f_r2], 1))
        torch.testing.assert_close(model(x, x2, 0.3), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("schedule", "epochs", "epoch", "alpha"), [
    ("parabolic", 10, 4, 1 - (5 / 10) ** 2),  # alpha = 1 - (T / T_max)^2, T the 1-based epoch
    ("official", 180, 90, 1 - (90 / 200) ** 2),  # the official code: T = epoch - 1, T_max rounded up to 200
])
def test_bbn_loss_is_alpha_weighted_with_the_schedule(schedule: str, epochs: int, epoch: int, alpha: float):
    from imgcls_cli.methods.bbn import BBNTask

    torch.manual_seed(0)
    cfg = build_config(None, {"model.backbone": "resnet32", "train.method": "bbn", "train.epochs": epochs,
                              "train.bbn_schedule": schedule})
    model = build_task_model(cfg, 4).eval()
    task = BBNTask(cfg, model, 4, [40, 20, 10, 5])
    task.on_epoch_start(epoch)
    g = torch.Generator().manual_seed(2)
    x, x2 = torch.randn(6, 3, 32, 32, generator=g), torch.randn(6, 3, 32, 32, generator=g)
    y, y2 = torch.tensor([0, 0, 1, 2, 0, 1]), torch.tensor([3, 2, 3, 1, 3, 2])
    out = task.train_step({"images": x, "targets": y, "images2": x2, "targets2": y2})
    assert float(out["alpha"]) == pytest.approx(alpha)
    with torch.no_grad():
        z = model(x, x2, alpha)
        want = alpha * F.cross_entropy(z, y) + (1 - alpha) * F.cross_entropy(z, y2)  # eq. 4
    torch.testing.assert_close(out["logits"].detach(), z)
    torch.testing.assert_close(out["loss"].detach(), want)


def test_bbn_second_stream_draws_from_the_reversed_sampler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from imgcls_cli.methods.bbn import BBNTask

    seen: dict[str, list[torch.Tensor]] = {"targets": [], "targets2": []}
    step = BBNTask.train_step

    def recording_step(self: BBNTask, batch: dict) -> dict:
        for k in seen:
            seen[k].append(batch[k].cpu())
        return step(self, batch)

    monkeypatch.setattr(BBNTask, "train_step", recording_step)
    data = lt_folder(tmp_path / "lt", counts=(40, 12, 4), val=1)
    res = ic.train(**quick(data, **{"train.method": "bbn", "train.epochs": 5, "model.backbone": "resnet20",
                                    "train.out": str(tmp_path / "bbn")}))
    counts = np.array(ic.load_checkpoint(res.run_dir / "last.pt").class_counts)  # training images per class
    main = np.bincount(torch.cat(seen["targets"]).numpy(), minlength=3)
    second = np.bincount(torch.cat(seen["targets2"]).numpy(), minlength=3)
    assert main.sum() == second.sum() >= 100  # as many images per epoch in both streams
    p_rev = (counts.max() / counts) / (counts.max() / counts).sum()  # eq. 1: p_i ~ N_max / N_i
    assert chisquare(second, p_rev * second.sum()).pvalue > 1e-3, second
    assert chisquare(main, counts / counts.sum() * main.sum()).pvalue > 1e-3, main  # conventional: uniform images
    assert chisquare(second, counts / counts.sum() * second.sum()).pvalue < 1e-6  # the test tells them apart


# ---------------------------------------------------------------- cRT / LWS
@pytest.fixture
def stage1(tmp_path: Path) -> tuple[Path, Path]:
    data = lt_folder(tmp_path / "lt", counts=(40, 12, 4), val=3)
    res = ic.train(**quick(data, **{"train.out": str(tmp_path / "s1")}))
    return data, res.run_dir / "last.pt"


def test_crt_keeps_backbone_bit_identical(stage1: tuple[Path, Path], tmp_path: Path):
    data, ckpt = stage1
    res = ic.train(**quick(data, **{"train.method": "crt", "train.init_from": str(ckpt),
                                        "train.epochs": 2, "optim.lr": 0.05, "train.out": str(tmp_path / "crt")}))
    assert res.config.data.sampler == "class_balanced"  # the method's default, stated in config.yaml
    before, after = read_checkpoint(ckpt)["model"], read_checkpoint(res.run_dir / "last.pt")["model"]
    assert before.keys() == after.keys()
    for k in before:
        if k.startswith("fc."):
            assert not torch.equal(before[k], after[k]), k  # re-initialised and trained
        else:
            assert torch.equal(before[k], after[k]), k  # weights and BN running stats untouched
    explicit = build_config(None, {"train.method": "crt", "train.init_from": str(ckpt), "data.sampler": "sqrt"})
    assert explicit.data.sampler == "sqrt"  # a sampler the user gives is never overridden


def test_crt_classifier_is_reinitialised(stage1: tuple[Path, Path], tmp_path: Path):
    # at lr 1e-6 training moves the classifier by ~1e-6: what differs from stage 1 is the re-initialisation
    data, ckpt = stage1
    res = ic.train(**quick(data, **{"train.method": "crt", "train.init_from": str(ckpt), "optim.lr": 1e-6,
                                        "train.out": str(tmp_path / "crt")}))
    before, after = read_checkpoint(ckpt)["model"], read_checkpoint(res.run_dir / "last.pt")["model"]
    bound = 1 / 64 ** 0.5  # nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in 64 (ResNet-20)
    for k in ("fc.weight", "fc.bias"):
        assert float((after[k] - before[k]).abs().max()) > 0.02, k  # a fresh draw, not the stage-1 classifier
        assert float(after[k].abs().max()) <= bound + 1e-4, k
        assert float(after[k].std()) > bound / 4, k  # spread over the init range, not a constant


def test_lws_trains_only_the_scales(stage1: tuple[Path, Path], tmp_path: Path):
    data, ckpt = stage1
    res = ic.train(**quick(data, **{"train.method": "lws", "train.init_from": str(ckpt),
                                        "optim.lr": 0.5, "train.out": str(tmp_path / "lws")}))
    before, after = read_checkpoint(ckpt)["model"], read_checkpoint(res.run_dir / "last.pt")["model"]
    assert set(after) == {k.replace("fc.", "fc.inner.") for k in before} | {"fc.scales"}
    for k, v in before.items():
        assert torch.equal(v, after[k.replace("fc.", "fc.inner.")]), k
    assert not torch.equal(after["fc.scales"], torch.ones(3))
    assert ic.load_checkpoint(res.run_dir / "last.pt").model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_stage2_errors(stage1: tuple[Path, Path]):
    data, ckpt = stage1
    with pytest.raises(ImgclsError, match="--init-from"):
        build_config(None, {"train.method": "crt"})
    with pytest.raises(ImgclsError, match="model.backbone='resnet20'.*'resnet32'"):
        ic.train(**quick(data, **{"train.method": "crt", "train.init_from": str(ckpt),
                                      "model.backbone": "resnet32"}))
    with pytest.raises(ImgclsError, match="file not found"):
        ic.train(**quick(data, **{"train.method": "lws", "train.init_from": "nope.pt"}))


# ---------------------------------------------------------------- end to end through the CLI
def test_cli_ce_then_crt_then_tau_norm_auto(tmp_path: Path):
    from imgcls_cli.cli.app import app

    # 130 / 30 / 8 images; the default carved selection split (20, 6, 1 of them) leaves 110 / 24 / 7 to train on:
    # many / medium / few.  best.pt and tau are chosen on the carved images, the reported split is val/.
    data = lt_folder(tmp_path / "lt", counts=(130, 30, 8))
    runner = CliRunner()
    common = ["--data", str(data), "--img-size", "32", "--backbone", "resnet20", "--batch-size", "32", "--workers", "0",
              "--device", "cpu", "--no-progress"]
    r = runner.invoke(app, ["train", *common, "--epochs", "1", "--out", str(tmp_path / "ce")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", *common, "--epochs", "1", "--method", "crt", "--init-from",
                            str(tmp_path / "ce" / "best.pt"), "--out", str(tmp_path / "crt")])
    assert r.exit_code == 0, r.output
    js = tmp_path / "eval.json"
    r = runner.invoke(app, ["eval", str(tmp_path / "crt"), "--tau-norm", "auto", "--json", str(js), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    s = json.loads(js.read_text())
    assert {"many", "medium", "few", "top1", "per_class", "tau"} <= set(s)
    assert all(s[k] is not None for k in ("many", "medium", "few"))
    assert s["tau"] in TAUS and len(s["tau_search"]) == 21
    assert s["tau_selected_on"] == "carve"
    final = json.loads((tmp_path / "ce" / "final_eval.json").read_text())
    assert final["selected_on"] == "carve" and final["split"] == "val" and final["checkpoint"] == "best.pt"
    assert (tmp_path / "crt" / "eval_val_tau-auto" / "per_class_vs_frequency.png").is_file()  # its own folder
    r = runner.invoke(app, ["eval", str(tmp_path / "crt"), "--classifier", "ncm", "--json", str(js), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert json.loads(js.read_text())["classifier"] == "ncm"
    r = runner.invoke(app, ["eval", str(tmp_path / "crt"), "--tau-norm", "x", "--device", "cpu"])
    assert r.exit_code == 2 and "--tau-norm" in r.output


def test_imbalance_ratio_warns_with_the_real_ratio(tmp_path):
    """Issue 25: an early class with too few images silently gave a smaller ratio.  Mutation caught: no note,
    or a note with the requested rather than the real ratio; a subset that reaches the ratio gets none."""
    from imgcls_cli.data.sources import open_data
    from tests.conftest import make_folder_dataset

    root = make_folder_dataset(tmp_path / "d", classes=3, train=20, val=1, size=8)
    for f in sorted((root / "train" / "class_0").iterdir())[4:]:  # the head class keeps 4 of its 20
        f.unlink()
    b = open_data(build_config(None, {"data.path": str(root), "data.imbalance_ratio": 10,
                                      "data.select_split": "none"}).data)
    assert b.class_counts() == [4, 6, 2]  # wants [20, 6, 2]
    assert len(b.notes) == 1 and "ratio is 3.0 (largest class 6 images, smallest 2), not 10" in b.notes[0]
    root2 = make_folder_dataset(tmp_path / "e", classes=3, train=20, val=1, size=8)
    assert open_data(build_config(None, {"data.path": str(root2), "data.imbalance_ratio": 10,
                                         "data.select_split": "none"}).data).notes == []
