"""File formats and codecs that need no model: the Deep Compression container (``zdc``) and
its canonical Huffman codec (``huffman``). The lowest layer of the zoo with ``zoo.utils``:
it imports numpy, torch and ``zoo.utils`` only, so the resolver can read any file format."""

from zoo.formats import huffman, zdc

__all__ = ["huffman", "zdc"]
