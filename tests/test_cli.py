"""The `zoo` command: readable output, clear errors, delegation to the library."""

from pathlib import Path

import pytest

from zoo.cli import main

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def test_info_shows_measured_beside_published(capsys):
    assert main(["info", "shufflenet_g3"]) == 0
    out = capsys.readouterr().out
    assert out.count("1,865,728") == 2  # measured and published (pytorchcv port)
    assert "137.5M" in out and "paper Table 1" in out


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["info", "shufflenet_g33"]) == 2
    captured = capsys.readouterr()
    assert "Did you mean" in captured.err and "shufflenet_g3" in captured.err
    assert captured.out == ""  # errors go to stderr, never into the listing on stdout


def test_list_filters_by_pattern(capsys):
    assert main(["list", "shufflenet_v2*"]) == 0
    out = capsys.readouterr().out
    assert "shufflenet_v2_x1_0" in out and "2,278,604" in out and "mobilenet" not in out


def test_list_pretrained_counts_without_downloading(capsys, monkeypatch, tmp_path):
    """Counting needs the architecture only: `zoo list --pretrained` offline, empty cache."""
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    monkeypatch.setenv("ZOO_HOME", str(tmp_path))
    assert main(["list", "alexnet*", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "alexnet.tv_in1k" in out and "61,100,840" in out
    assert "56.5" in out  # torchvision's own top-1 for that tag (56.522), not the paper's 57.2
    assert not any(tmp_path.rglob("*.pth"))


def test_reproduce_writes_the_tables_and_exits_0_when_all_explained(tmp_path, capsys):
    out, plot = tmp_path / "tables.md", tmp_path / "plot.png"
    code = main(
        ["reproduce", "--pattern", "shufflenet_v2*", "--out", str(out), "--plot", str(plot)]
    )
    text = out.read_text()
    assert code == 0, capsys.readouterr().out
    assert "ShuffleNet v2" in text and "2.279M / 2.279M" in text  # torchvision's 2,278,604
    assert plot.stat().st_size > 1000


def test_summary_prints_unwrapped_rows(capsys):
    assert main(["summary", "xnor_resnet18", "--input-size", "32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = next(ln for ln in lines if ln.startswith("features.layer1.0.conv1.conv"))
    assert "xnor" in row and "36,864" in row  # 64 * 64 * 3 * 3 1-bit weights on one line


@pytest.mark.data
@pytest.mark.skipif(not FMNIST.exists(), reason="apt-get install dataset-fashion-mnist")
def test_dataset_writes_an_image_folder(tmp_path, capsys):
    assert (
        main(
            [
                "dataset",
                "fashion-mnist",
                str(tmp_path),
                "--limit-per-class",
                "2",
                "--splits",
                "test",
            ]
        )
        == 0
    )
    classes = sorted(p.name for p in (tmp_path / "test").iterdir())
    assert len(classes) == 10 and "Trouser" in classes
    assert len(list((tmp_path / "test").rglob("*.png"))) == 20
