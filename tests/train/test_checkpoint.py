"""Checkpoints: atomic writes, weights_only reads, clear mismatch errors, RNG round trips."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
import torch

import zoo
from zoo.pretrained import CorruptCheckpointError, UnsafeCheckpointError
from zoo.train import (
    CheckpointError,
    CheckpointMismatchError,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from zoo.train.checkpoint import get_rng_state, set_rng_state, state_digest


def _payload(arch="mobilenet_v1_x0_25", num_classes=4, in_chans=1):
    m = zoo.create(arch, num_classes=num_classes, in_chans=in_chans)
    return m, {
        "arch": arch,
        "num_classes": num_classes,
        "in_chans": in_chans,
        "class_names": list("abcd")[:num_classes],
        "state_dict": m.state_dict(),
        "rng": [get_rng_state()],
        "epoch": 3,
    }


def test_round_trip_is_plain_weights_only(tmp_path):
    model, payload = _payload()
    save_checkpoint(tmp_path / "c.pt", payload)
    raw = torch.load(tmp_path / "c.pt", weights_only=True)  # no custom classes inside
    assert raw["format"] == "zoo.checkpoint.v1" and raw["epoch"] == 3
    rebuilt, ckpt = model_from_checkpoint(tmp_path / "c.pt")
    assert ckpt["class_names"] == ["a", "b", "c", "d"] and not rebuilt.training
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k


def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    _, payload = _payload()
    path = save_checkpoint(tmp_path / "last.pt", payload)
    before = path.read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *a, **kw):
        f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # e.g. Ctrl-C while writing

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {**payload, "epoch": 4})
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind
    assert load_checkpoint(path)["epoch"] == 3


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(CorruptCheckpointError, match="junk.pt is not a readable"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not a zoo checkpoint"):
        load_checkpoint(tmp_path / "sd.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "part.pt", {"arch": "x"})
    with pytest.raises(CheckpointError, match="lacks field"):
        load_checkpoint(tmp_path / "part.pt")


def test_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"format": "zoo.checkpoint.v1", "arch": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeCheckpointError, match="GLOBAL print"):
        load_checkpoint(tmp_path / "evil.pt")


def test_wrong_checkpoint_for_model_lists_keys(tmp_path):
    _, payload = _payload("mobilenet_v1_x0_25", num_classes=4)
    save_checkpoint(tmp_path / "small.pt", payload)
    # Same family, other width: every conv is reshaped.
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches \(\d+\): features\.stem"):
        model_from_checkpoint(tmp_path / "small.pt", arch="mobilenet_v1_x0_5")
    # Another family: keys missing and unexpected, with counts.
    with pytest.raises(
        CheckpointMismatchError, match=r"(?s)missing keys \(\d+\): .*unexpected keys \(\d+\): "
    ):
        model_from_checkpoint(tmp_path / "small.pt", arch="shufflenet_v2_x0_5")


def test_custom_builder_hook():
    m = zoo.create("tiny_models:tiny_net", num_classes=3, in_chans=1)
    assert m(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ValueError, match="only available for zoo models"):
        zoo.create("tiny_models:tiny_net", num_classes=3, pretrained=True)
    with pytest.raises(ValueError, match="cannot import model builder"):
        zoo.create("no_such_module_xyz:net", num_classes=3)


def test_rng_state_round_trip(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    save_checkpoint(
        tmp_path / "r.pt",
        {"arch": "a", "num_classes": 1, "in_chans": 1, "state_dict": {}, "rng": get_rng_state()},
    )
    first = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    again = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3).tolist())
    assert again == first


def test_state_digest():
    sd = {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(5)}
    d = state_digest(sd)
    # Independent hash of the same bytes: dtype and shape prefix, then raw little-endian data.
    h = hashlib.sha256(b"torch.float32(2, 3)")
    h.update(np.arange(6, dtype="<f4").tobytes())
    assert d["w"] == h.hexdigest()
    changed = {"w": sd["w"].clone(), "n": sd["n"]}
    changed["w"][1, 2] += 1e-6
    assert state_digest(changed)["w"] != d["w"] and state_digest(changed)["n"] == d["n"]


@pytest.mark.parametrize("record", ["model_kwargs", "arch_overrides"])
def test_model_variant_is_rebuilt(tmp_path, record):
    # Weights trained with ReLU6 (e.g. timm's MobileNet v1) need that variant; a checkpoint
    # records it so predict/validate/resume rebuild the same network, not a ReLU one. Older
    # checkpoints say it as arch_overrides, translated by the resolver.
    m = zoo.create("mobilenet_v1_x0_25", num_classes=3, in_chans=1, act_layer="relu6")
    assert any(isinstance(x, torch.nn.ReLU6) for x in m.modules())
    save_checkpoint(
        tmp_path / "c.pt",
        {
            "arch": "mobilenet_v1_x0_25",
            "num_classes": 3,
            "in_chans": 1,
            "state_dict": m.state_dict(),
            record: {"act_layer": "relu6"},
        },
    )
    rebuilt, _ = model_from_checkpoint(tmp_path / "c.pt")
    kinds = {type(x) for x in rebuilt.modules()}
    assert torch.nn.ReLU6 in kinds and torch.nn.ReLU not in kinds
    x = torch.randn(2, 1, 32, 32) * 10  # large inputs so ReLU and ReLU6 differ
    assert torch.equal(rebuilt(x), m.eval()(x))
