"""Nothing silent: a run whose validation loss diverges stops, and a checkpoint with NaN
weights is refused by predict and validate (issue 13)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zoo.train import load_checkpoint, save_checkpoint
from zoo.train.distributed import DistInfo
from zoo.train.fit import fit
from zoo.train.optim import create_scheduler
from zoo.train.predict import main as predict_main
from zoo.train.validate import main as validate_main


class _NanWhenEvaluating(nn.Module):
    """Finite while training, NaN logits in eval mode: a model whose weights blew up."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return y if self.training else y * float("nan")


def test_nonfinite_validation_loss_stops_the_run_and_saves_nothing(tmp_path):
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g))
    model = _NanWhenEvaluating()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(ds, batch_size=8)
    with pytest.raises(FloatingPointError, match="validation loss became nan"):
        fit(
            model,
            loader,
            loader,
            opt,
            create_scheduler(opt, 2),
            DistInfo(),
            1,
            nn.CrossEntropyLoss(),
            output=tmp_path,
            progress=False,
        )
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "last.pt").exists()
    assert not (tmp_path / "summary.csv").exists()


@pytest.mark.data
def test_predict_and_validate_refuse_nonfinite_weights(
    trained_run, fm_split_folder, tmp_path, capsys
):
    ckpt = load_checkpoint(trained_run / "best.pt")
    state = dict(ckpt["state_dict"])
    key = next(k for k, v in state.items() if v.is_floating_point() and v.dim() > 1)
    state[key] = state[key].clone()
    state[key].view(-1)[0] = float("nan")
    bad = tmp_path / "diverged.pt"
    save_checkpoint(bad, {**ckpt, "state_dict": state})
    image = sorted((fm_split_folder / "val" / "Bag").glob("*.png"))[0]

    assert predict_main([str(bad), str(image), "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    assert str(bad) in err and "NaN or infinite" in err and key in err
    assert "%" not in out

    code = validate_main(
        [str(bad), "--data", str(fm_split_folder), "--workers", "0", "--no-progress"]
    )
    assert code == 2
    assert "NaN or infinite" in capsys.readouterr().err
