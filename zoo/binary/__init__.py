"""Binary networks: BWN and XNOR-Net layers, conversion, binary-aware summary, 1-bit files.

>>> import torchvision, zoo.binary as zb
>>> net = zb.binarize(torchvision.models.resnet18(), "xnor")   # first conv and fc stay float
>>> print(zb.summary(net))                                      # 1-bit/32-bit params, MACs, S
>>> zb.save_binary(net, "xnor_resnet18.safetensors")            # signs packed 8 per byte

The registered ``bwn_*``/``xnor_*`` twins live in ``zoo.binary.variants``; a 1-bit file
loads with ``zoo.create(path)`` or ``zoo.load_binary(path, model)``.
"""

from zoo.binary.convert import BinarizeInfo, binarize, find_first_last, is_depthwise
from zoo.binary.layers import MODES, BinaryConv2d, BinaryLinear, is_binary
from zoo.binary.packed import PackedBinaryConv2d, PackedBinaryLinear, pack, packed_weight_bytes
from zoo.binary.packing import (
    check_binary_layers,
    pack_signs,
    read_metadata,
    save_binary,
    unpack_signs,
)
from zoo.binary.quantizers import (
    ApproxSign,
    Quantizer,
    ScaledSign,
    SteSign,
    get_quantizer,
    scaled_sign,
    sign,
    ste_sign,
)
from zoo.binary.summary import BinarySummary, LayerRow, summary, xnor_speedup

__all__ = [
    "pack",
    "packed_weight_bytes",
    "PackedBinaryConv2d",
    "PackedBinaryLinear",
    "MODES",
    "ApproxSign",
    "BinarizeInfo",
    "BinaryConv2d",
    "BinaryLinear",
    "BinarySummary",
    "LayerRow",
    "Quantizer",
    "ScaledSign",
    "SteSign",
    "binarize",
    "find_first_last",
    "get_quantizer",
    "is_binary",
    "is_depthwise",
    "check_binary_layers",
    "pack_signs",
    "read_metadata",
    "save_binary",
    "scaled_sign",
    "sign",
    "ste_sign",
    "summary",
    "unpack_signs",
    "xnor_speedup",
]
