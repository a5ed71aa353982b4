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
    out = capsys.readouterr().out
    assert "Did you mean" in out and "shufflenet_g3" in out


def test_list_filters_by_pattern(capsys):
    assert main(["list", "shufflenet_v2*"]) == 0
    out = capsys.readouterr().out
    assert "shufflenet_v2_x1_0" in out and "2,278,604" in out and "mobilenet" not in out


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
