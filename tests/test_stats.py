"""`imgcls stats`: data-set counts/bins/sizes/mean-std/bad files, model params/FLOPs/latency, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from imgcls_cli.cli.app import app
from imgcls_cli.data.decode import IMAGE_EXTS, decode_file
from imgcls_cli.stats.dataset import bins, dataset_stats
from imgcls_cli.stats.model import model_stats

from .conftest import shared


def _count_files(root: Path, split: str) -> dict[str, int]:
    d = root / split
    return {c.name: sum(1 for f in c.rglob("*") if f.suffix.lower() in IMAGE_EXTS)
            for c in sorted(d.iterdir()) if c.is_dir()}


def test_folder_counts_sizes_and_mean_std_match_a_direct_computation(tiny_folder: Path) -> None:
    s = dataset_stats(str(tiny_folder))
    assert s["train_counts"] == _count_files(tiny_folder, "train")
    assert s["val_counts"] == _count_files(tiny_folder, "val")
    assert s["imbalance_ratio"] == 1.0 and s["bins"] == {"many": 0, "medium": 0, "few": 3}
    assert s["sizes"]["most_common"] == [["32x32", 36]] and s["unreadable"] == []
    px = np.concatenate([decode_file(f).reshape(-1, 3) / 255.0 for f in sorted(tiny_folder.rglob("*.jpg"))])  # (N, 3)
    np.testing.assert_allclose(s["mean"], px.mean(0), atol=1e-4)
    np.testing.assert_allclose(s["std"], px.std(0), atol=1e-4)


def test_bins_follow_the_long_tail_thresholds() -> None:
    assert bins([101, 100, 20, 19, 0]) == {"many": 1, "medium": 2, "few": 2}


def test_real_folder_counts_equal_the_files() -> None:
    root = shared("hymenoptera")
    s = dataset_stats(str(root), max_images=50)
    assert s["train_counts"] == _count_files(root, "train") and s["val_counts"] == _count_files(root, "val")
    assert s["num_train"] + s["num_val"] == s["total_images"] and s["scanned"] == 50
    assert s["imbalance_ratio"] == pytest.approx(max(s["train_counts"].values()) / min(s["train_counts"].values()))


def test_imbalance_ratio_option_shows_the_long_tailed_counts() -> None:
    s = dataset_stats("digits", imbalance_ratio=10.0, max_images=100)
    counts = list(s["train_counts"].values())
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1]
    assert s["imbalance_ratio"] == pytest.approx(10.0, rel=0.15)


def test_unreadable_files_are_listed_with_reasons(tiny_folder: Path) -> None:
    (tiny_folder / "train" / "class_0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tiny_folder / "val" / "class_1" / "empty.png").write_bytes(b"")
    s = dataset_stats(str(tiny_folder))
    bad = {Path(b["file"]).name: b["reason"] for b in s["unreadable"]}
    assert set(bad) == {"broken.jpg", "empty.png"} and "empty file" in bad["empty.png"]
    assert s["train_counts"]["class_0"] == 9  # listed files are counted; the reader reports the bad one


def test_resnet50_at_224_is_4_09_gmacs() -> None:
    import imgcls_cli as ic

    s = model_stats(ic.build_model("resnet50", 1000), 224, runs=0)
    assert s["gmacs"] == pytest.approx(4.09, rel=0.01)
    assert s["params"] == 25_557_032  # torchvision's ResNet-50
    assert sum(r["macs"] for r in s["stages"]) == s["macs"] and sum(r["params"] for r in s["stages"]) == s["params"]
    assert [r["stage"] for r in s["stages"]] == ["(stem and rest)", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert s["stages"][3]["output"] == [1024, 14, 14]


def test_cli_checkpoint_stats_json(tmp_path: Path) -> None:
    from imgcls_cli.engine.checkpoint import load_checkpoint

    from .test_export import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "best.pt", img_size=32, **{"model.attn": "se"})
    r = CliRunner().invoke(app, ["stats", str(tmp_path), "--json", "m.json", "--runs", "3"])
    assert r.exit_code == 0, r.output
    s = json.loads(Path("m.json").read_text())
    model = load_checkpoint(ckpt).model
    assert s["params"] == sum(p.numel() for p in model.parameters()) and s["img_size"] == 32 and s["attn"] == "se"
    assert s["latency"]["median_ms"] > 0 and s["latency"]["batch"] == 1 and s["latency"]["runs"] == 3
    assert s["macs"] == s["flops"] // 2 and "GMACs" in r.output and "layer3" in r.output


def test_cli_data_stats_histogram_and_json(tiny_folder: Path) -> None:
    r = CliRunner().invoke(app, ["stats", str(tiny_folder), "--histogram", "h.png", "--json", "d.json"])
    assert r.exit_code == 0, r.output
    assert Path("h.png").read_bytes()[:4] == b"\x89PNG"
    s = json.loads(Path("d.json").read_text())
    assert s["num_train"] == 24 and s["num_val"] == 12 and "imbalance ratio" in r.output


def test_cli_stats_of_a_pack_equal_the_folder(tiny_folder: Path) -> None:
    from imgcls_cli.data.hdf5 import pack_folder

    pack_folder(tiny_folder, "t.h5")
    a, b = dataset_stats(str(tiny_folder)), dataset_stats("t.h5")
    for key in ("train_counts", "val_counts", "mean", "std", "sizes", "bins"):
        assert a[key] == b[key], key


def test_cli_errors_and_components(tmp_path: Path, tiny_folder: Path) -> None:
    from .test_export import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "c.pt")
    runner = CliRunner()
    for args, needle in ((["stats", str(tiny_folder), "--features", "f.png"], "--features"),
                         (["stats", str(ckpt), "--histogram", "h.png"], "--histogram"),
                         (["stats", "no_such_dir"], "no_such_dir"),
                         (["stats"], "DATA_OR_CHECKPOINT")):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output, (args, r.output)
    r = runner.invoke(app, ["stats", "--components"])
    assert r.exit_code == 0 and "resnet50" in r.output and "backbone" in r.output


def test_cli_features_plot_from_a_checkpoint(tmp_path: Path, tiny_folder: Path) -> None:
    pytest.importorskip("imgcls_cli.stats.features")
    from .test_export import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "c.pt", names=["class_0", "class_1", "class_2"],
                           **{"data.path": str(tiny_folder)})
    torch.manual_seed(0)
    r = CliRunner().invoke(app, ["stats", str(ckpt), "--features", "f.png", "--runs", "0"])
    assert r.exit_code == 0, r.output
    assert Path("f.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_preview_grid_of_a_data_set(tiny_folder: Path) -> None:
    pytest.importorskip("imgcls_cli.viz.preview")
    r = CliRunner().invoke(app, ["stats", str(tiny_folder), "--preview", "p.png", "--max-images", "5"])
    assert r.exit_code == 0, r.output
    assert Path("p.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("ratio", ["0.5", "nan", "-3"])
def test_stats_bad_imbalance_ratio_is_one_line(ratio: str) -> None:
    """`imgcls stats DATA --imbalance-ratio 0.5` used to print pydantic's ValidationError traceback."""
    res = CliRunner().invoke(app, ["stats", "digits", "--imbalance-ratio", ratio])
    text = res.output.strip()
    assert res.exit_code == 2 and "Traceback" not in text and len(text.splitlines()) == 1, text
    assert text.startswith(f"error: --imbalance-ratio {float(ratio)}") and "greater than or equal to 1" in text


@pytest.mark.parametrize("args", [["base.pt", "--img-size", "0"], ["base.pt", "--img-size", "-5"],
                                  ["base.pt", "--runs", "-1"], ["digits", "--max-images", "0"]])
def test_stats_out_of_range_numbers_are_one_line(args: list[str]) -> None:
    """--img-size 0 silently meant the training size, -5 and --max-images -1 crashed in torch / numpy."""
    res = CliRunner().invoke(app, ["stats", *args])
    text = res.output.strip()
    assert res.exit_code == 2 and len(text.splitlines()) == 1 and f"error: {args[1]} {args[2]}: must be >=" in text


def test_stats_img_size_the_model_cannot_run_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """A forward that fails at the asked --img-size (VGG below 32 px, out of memory) is named, not a traceback."""
    import imgcls_cli.engine.checkpoint as ck
    import imgcls_cli.stats.model as sm
    from imgcls_cli.errors import ImgclsError

    class Fake:
        config = type("C", (), {"data": type("D", (), {"img_size": 32})()})()
        model = None

    def too_small(*_a, **_k):
        raise RuntimeError("Given input size: (512x1x1). Calculated output size: (512x0x0). Output size is too small")

    monkeypatch.setattr(ck, "load_checkpoint", lambda *_a, **_k: Fake())
    monkeypatch.setattr(sm, "model_stats", too_small)
    with pytest.raises(ImgclsError, match=r"--img-size 16: this model cannot run at 16x16 \(Given input size"):
        sm.checkpoint_stats("x.pt", img_size=16)
    with pytest.raises(RuntimeError):  # at the training size it is not the user's doing
        sm.checkpoint_stats("x.pt")
