"""What ``zoo benchmark`` times for one model: its variants, its peers and its binary twins.

``runners_for`` builds the runners (``zoo.deploy.timing.Runner``) for one model, batch size
and thread count: the zoo model eager, fused, channels_last, compiled and exported to ONNX
runtimes, each peer, and each ``bwn_``/``xnor_`` twin (simulated and, for XNOR, packed).
Built once per thread count, because compiled code and runtime sessions fix their threads.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from zoo.counting import layer_macs
from zoo.deploy.export import export_onnx
from zoo.deploy.fuse import fuse as fuse_model
from zoo.deploy.fuse import fuse_and_pack
from zoo.deploy.runtimes import RUNTIMES, OnnxRunner, missing_runtime
from zoo.deploy.timing import Runner, short_error
from zoo.factory import create
from zoo.pretrained.peers import PeerSpec, PeerUnavailable, build_peer

__all__ = ["make_variant", "runners_for", "runtime_runners", "zoo_variants"]


def _macs(model: nn.Module, input_size: tuple[int, int, int]) -> int:
    return int(sum(layer_macs(model, input_size).values()))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def zoo_variants(fuse: bool, channels_last: bool, compile: bool) -> list[str]:
    bases = ["eager"] + (["fused"] if fuse else [])
    out = list(bases)
    if channels_last:
        out += [f"{b}+cl" for b in bases]
    if compile:
        out.append(f"{bases[-1]}+compile")
    return out


def make_variant(model: nn.Module, variant: str, example: torch.Tensor) -> nn.Module:
    """The model prepared as ``variant`` says (eager / fused, +cl, +compile)."""
    if variant == "packed":  # XNOR layers on packed bits (zoo.deploy.fuse_and_pack)
        return fuse_and_pack(model)
    cl = "+cl" in variant
    if variant.startswith("fused"):
        return fuse_model(  # "fused": zoo.fuse's default, which picks the faster layout
            model,
            channels_last=True if cl else None,
            compile="+compile" in variant,
            compile_options={"dynamic": False},
            example_input=example,
        )
    m = model.eval() if variant == "eager" else copy.deepcopy(model).eval()
    if cl:
        m = m.to(memory_format=torch.channels_last)
    if "+compile" in variant:
        m = torch.compile(m, dynamic=False)
    return m


def runtime_runners(
    model: nn.Module, runtimes: Sequence[str], shape: tuple[int, ...]
) -> dict[str, OnnxRunner]:
    """``model`` exported to ONNX at the fixed ``shape`` and loaded in each of ``runtimes``.

    The file is exported from ``zoo.fuse``'s graph (BN folded; measured as fast as or faster
    than the eager graph in both runtimes, which fold BN themselves) and not checked here:
    tests/deploy/test_runtimes.py holds the runners to the eager outputs. Runtimes threads:
    torch's current count. Raises when the export or a runtime fails.
    """
    with tempfile.TemporaryDirectory() as tmpdir:
        path = Path(tmpdir) / "model.onnx"
        export_onnx(
            model,
            path,
            fuse=True,
            input_size=tuple(shape[1:]),
            batch_size=shape[0],
            dynamic_batch=False,
            check=False,
        )
        return {rt: OnnxRunner(path, rt) for rt in runtimes}  # sessions hold the graph


def runners_for(
    name: str,
    variants: list[str],
    peers: Sequence[PeerSpec],
    twins: Sequence[str],
    input_size: tuple[int, int, int],
    notes: list[str],
    batch: int = 1,
) -> list[Runner]:
    """Runners for the zoo model's variants, its peers and its binary twins, at one input size.

    Variants named in ``RUNTIMES`` run the model exported to ONNX at ``batch`` in that
    runtime; a runtime that is not installed is left out with a note.
    """
    example = torch.randn(1, *input_size)
    base = create(name).eval()
    macs, params = _macs(base, input_size), _params(base)
    runners = []
    for rt in [v for v in variants if v in RUNTIMES and missing_runtime(v)]:
        notes.append(f"{rt} rows skipped: {missing_runtime(rt)}")
    variants = [v for v in variants if v not in RUNTIMES or not missing_runtime(v)]
    onnx_runners: dict[str, OnnxRunner] = {}
    onnx_error = ""
    if any(v in RUNTIMES for v in variants):
        try:
            rts = [v for v in variants if v in RUNTIMES]
            onnx_runners = runtime_runners(base, rts, (batch, *input_size))
        except Exception as err:  # reported in the table like any failing variant
            onnx_error = short_error(err)
    for v in variants:
        if v in RUNTIMES:
            r = Runner(f"zoo {v}", "zoo", v, fn=onnx_runners.get(v, lambda x: None))
            r.macs, r.params, r.error = macs, params, onnx_error
            runners.append(r)
            continue
        label = "zoo" if v == "eager" else f"zoo {v}"
        r = Runner(label, "zoo", v, fn=lambda x: None, channels_last="+cl" in v)
        r.macs, r.params = macs, params
        try:
            r.fn = make_variant(base, v, example)
        except Exception as err:
            r.error = short_error(err)
        runners.append(r)
    for spec in peers:
        try:
            peer = build_peer(spec).eval()
        except PeerUnavailable as err:
            notes.append(f"{name}: peer {spec.label} skipped ({err})")
            continue
        r = Runner(spec.label, "peer", "eager", fn=peer, params=_params(peer))
        try:
            r.macs = _macs(peer, input_size)
        except Exception as err:  # e.g. a fixed-size final pooling layer
            r.error = f"fails at input {input_size}: {short_error(err)}"
        runners.append(r)
    for twin in twins:
        twin_variants = [v for v in variants if v in ("eager", "fused")]
        if twin.startswith("xnor_"):
            twin_variants.append("packed")
        for v in twin_variants:
            label = twin if v == "eager" else f"{twin} {v}"
            r = Runner(label, "twin", v, fn=lambda x: None, macs=macs)
            try:
                tm = create(twin).eval()
                r.params = _params(tm)
                r.fn = make_variant(tm, v, example)
            except Exception as err:
                r.error = short_error(err)
            runners.append(r)
    return runners
