"""The shipped weights travel with the package: a built wheel, installed into a fresh venv
outside the repository, loads ``shufflenet_g3.fashion_mnist`` from its package data
(``zoo._weights``) and predicts exactly what the in-tree model predicts; an editable install
resolves the same package to the source tree's ``weights/``.

The venvs reuse this environment's torch through a ``.pth`` line (a plain path entry, so the
repo's editable-install hook in that site-packages is not run) and never see the repo: they
run from a temporary directory without ``PYTHONPATH``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

import zoo

REPO = Path(__file__).resolve().parents[1]
FM_IMAGES = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
FM_LABELS = Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")
ARCH, TAG, N_IMAGES = "shufflenet_g3", "fashion_mnist", 1000

# Run inside the installed environment: load the model from the installed package's data and
# write its predictions; print where zoo and its weights were found.
CHILD = """
import json, sys, torch, zoo
from zoo.pretrained.manifests import weights_dir
torch.set_num_threads(int(sys.argv[3]))
x = torch.load(sys.argv[1], weights_only=True)
model = zoo.create({arch!r}, pretrained={tag!r}).eval()
with torch.inference_mode():
    torch.save(model(x).argmax(1), sys.argv[2])
print(json.dumps({{"zoo": zoo.__file__, "weights": str(weights_dir())}}))
"""


def test_packages_list_matches_the_tree():
    """pyproject lists packages by hand (zoo._weights cannot be found); none may be missing."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "zoo").rglob("__init__.py")
    }
    assert set(cfg["packages"]) == on_disk | {"zoo._weights"}
    assert cfg["package-dir"] == {"zoo._weights": "weights"}
    assert (REPO / "weights" / "__init__.py").is_file()


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _source_copy(dest: Path) -> Path:
    """What a build needs, copied out of the repo so no build output lands in the tree."""
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("zoo", "weights"):
        shutil.copytree(REPO / name, dest / name, ignore=skip)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    return dest


def _fresh_venv(path: Path, wheel: Path) -> Path:
    """A venv with ``wheel`` installed (no deps) that also sees this environment's packages."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)], cwd=path.parent)
    python = path / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps"]
    _run([*pip, "--no-index", "--no-build-isolation", str(wheel)], cwd=path.parent)
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                   cwd=path.parent).strip()
    (Path(purelib) / "_zoo_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def _idx(path: Path, header: int) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header)


def _test_images(manifest: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The first N_IMAGES test images, preprocessed as the manifest says, and their labels."""
    prep = manifest["preprocessing"]
    assert prep["channel_order"] == "L" and prep["crop_pct"] == 1.0
    size = prep["input_size"][-1]
    tf = T.Compose([
        T.Resize((size, size), interpolation=T.InterpolationMode.BILINEAR),
        T.ToTensor(),
        T.Normalize(prep["mean"], prep["std"]),
    ])
    pixels = _idx(FM_IMAGES, 16).reshape(-1, 28, 28)[:N_IMAGES]
    labels = torch.from_numpy(_idx(FM_LABELS, 8)[:N_IMAGES].astype(np.int64))
    x = torch.stack([tf(Image.fromarray(p, mode="L")) for p in pixels])
    return x, labels


def _predict_installed(python: Path, x_file: Path, work: Path) -> tuple[torch.Tensor, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ZOO_WEIGHTS_DIR")}
    env.update(ZOO_OFFLINE="1", ZOO_HOME=str(work / "zoo_home"))
    script = work / "child.py"
    script.write_text(CHILD.format(arch=ARCH, tag=TAG))
    out_file = work / f"pred-{python.parent.parent.name}.pt"
    threads = str(torch.get_num_threads())
    out = _run([str(python), str(script), str(x_file), str(out_file), threads], cwd=work, env=env)
    return torch.load(out_file, weights_only=True), json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_wheel_and_editable_installs_carry_the_shipped_weights(tmp_path):
    if not (FM_IMAGES.is_file() and FM_LABELS.is_file()):
        pytest.skip(f"needs Fashion-MNIST at {FM_IMAGES.parent} (make data)")
    manifest = json.loads((REPO / "weights" / f"{ARCH}.{TAG}.json").read_text())
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)], src)
    wheel = next(dist.glob("zoo-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = [f["file"] for m in (REPO / "weights").glob("*.json")
               for f in json.loads(m.read_text()).get("files", []) if "file" in f]
    assert shipped and all(f"zoo/_weights/{f}" in names for f in shipped)
    assert not any(n.startswith(("share/", "zoo-0.1.0.data/")) for n in names)

    x, labels = _test_images(manifest)
    torch.save(x, tmp_path / "x.pt")
    with torch.inference_mode():  # the in-tree model, as the shipped-weights test loads it
        expected = zoo.create(ARCH, pretrained=TAG).eval()(x).argmax(1)
    top1 = 100.0 * float((expected == labels).float().mean())
    assert top1 == pytest.approx(manifest["metrics"]["top1"], abs=3.0)  # 1,000 of 10,000

    work = tmp_path / "work"
    work.mkdir()
    python = _fresh_venv(tmp_path / "venv_wheel", wheel)
    pred, where = _predict_installed(python, tmp_path / "x.pt", work)
    site = tmp_path / "venv_wheel"
    assert Path(where["zoo"]).is_relative_to(site) and not Path(where["zoo"]).is_relative_to(REPO)
    assert Path(where["weights"]) == Path(where["zoo"]).parent / "_weights"
    assert torch.equal(pred, expected)

    editable_dist = tmp_path / "edist"
    hook = "import sys; from setuptools import build_meta as b; b.build_editable(sys.argv[1])"
    _run([sys.executable, "-c", hook, str(editable_dist)], cwd=src)
    python = _fresh_venv(tmp_path / "venv_editable", next(editable_dist.glob("zoo-*.whl")))
    pred, where = _predict_installed(python, tmp_path / "x.pt", work)
    assert Path(where["zoo"]) == src / "zoo" / "__init__.py"
    assert Path(where["weights"]) == src / "weights"
    assert torch.equal(pred, expected)
