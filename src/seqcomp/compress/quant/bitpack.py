"""Dense bit-packing of b-bit integer codes into bytes, so stored sizes are what they claim.

Codes form one little-endian bitstream: code i occupies bits [i*b, (i+1)*b) of the stream,
least significant bit first, and byte j holds stream bits [8j, 8j+8). For b=4 this is two
codes per byte (first code in the low nibble); for b=3 eight codes fill three bytes. The
last byte is zero-padded. One code path serves every width, so all widths are tested alike.
"""

from __future__ import annotations

import torch


def packed_nbytes(count: int, bits: int) -> int:
    """Bytes needed for ``count`` codes of ``bits`` bits each."""
    return (count * bits + 7) // 8


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack a flat uint8 tensor of codes in [0, 2**bits) into a uint8 bitstream."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    if codes.dtype != torch.uint8 or codes.dim() != 1:
        raise ValueError("codes must be a 1-D uint8 tensor")
    if codes.numel() and int(codes.max()) >= 1 << bits:
        raise ValueError(f"a code does not fit in {bits} bits")
    shifts = torch.arange(bits, dtype=torch.uint8)
    stream = ((codes[:, None] >> shifts) & 1).reshape(-1)  # (count * bits,)
    padding = packed_nbytes(codes.numel(), bits) * 8 - stream.numel()
    stream = torch.nn.functional.pad(stream, (0, padding))  # (nbytes * 8,)
    weights = torch.tensor([1 << k for k in range(8)], dtype=torch.uint8)
    return (stream.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)  # (nbytes,)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``count`` codes as a flat uint8 tensor."""
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise ValueError("packed codes must be a 1-D uint8 tensor")
    if packed.numel() != packed_nbytes(count, bits):
        raise ValueError(
            f"{packed.numel()} bytes cannot hold exactly {count} codes of {bits} bits"
        )
    stream = (packed[:, None] >> torch.arange(8, dtype=torch.uint8)) & 1  # (nbytes, 8)
    stream = stream.reshape(-1)[: count * bits].view(count, bits)
    weights = torch.tensor([1 << k for k in range(bits)], dtype=torch.uint8)
    return (stream * weights).sum(dim=1, dtype=torch.uint8)  # (count,)
