"""Machinery the compression passes share: grids, coded parts, groups, bit packing, sizes,
activation ranges, the RTN grid and GPTQ's rounding. Never a registered pass itself."""
