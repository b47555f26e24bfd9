"""Torch modules built only from an ``Architecture``: ops, cells, the network, the supernet."""

from c2fnas.nn.network import C2FNet, Supernet, build_network, check_input_size

__all__ = ["C2FNet", "Supernet", "build_network", "check_input_size"]
