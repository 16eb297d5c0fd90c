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
from imgcls_cli.methods.decoupling_eval import TAUS, NearestClassMean, TauNorm, class_means, pick_tau
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
    assert b.class_counts() == [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]
    assert np.bincount(b.val.labels).tolist() == [1000] * 10  # the test split stays balanced


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


def test_ncm_nearest_mean():
    feats = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0]])
    means = class_means(feats, torch.tensor([0, 0, 1, 1]), 3)
    assert torch.isnan(means[2]).all()
    q = torch.tensor([[5.0, 0.5], [0.2, 1.0]])
    for metric in ("euclidean", "cosine"):
        z = NearestClassMean(means, metric)(None, q)
        assert z.argmax(1).tolist() == [0, 1] and torch.isinf(z[:, 2]).all()


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

    data = lt_folder(tmp_path / "lt")  # 120 / 30 / 8 training images: many / medium / few
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
    assert (tmp_path / "crt" / "eval_val_tau-auto" / "per_class_vs_frequency.png").is_file()  # its own folder
    r = runner.invoke(app, ["eval", str(tmp_path / "crt"), "--classifier", "ncm", "--json", str(js), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert json.loads(js.read_text())["classifier"] == "ncm"
    r = runner.invoke(app, ["eval", str(tmp_path / "crt"), "--tau-norm", "x", "--device", "cpu"])
    assert r.exit_code == 2 and "--tau-norm" in r.output
