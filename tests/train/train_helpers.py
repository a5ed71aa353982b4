"""Constants shared by the training tests (a plain module: conftest files are not importable)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Small, quick settings shared by the tests that train: 32x32 grayscale, tiny network.
MODEL = "mobilenet_v1_x0_25"
FAST = [
    "--img-size",
    "32",
    "--in-chans",
    "1",
    "--workers",
    "0",
    "--no-progress",
    "--batch-size",
    "32",
]
