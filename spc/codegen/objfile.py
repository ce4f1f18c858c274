"""A structural check of ELF objects, run before a cached binary is loaded: a
loader (MCJIT, the CUDA driver) given bytes that merely start like an object
file can crash the process instead of failing."""
from __future__ import annotations

import platform
import struct

EM_X86_64, EM_AARCH64, EM_CUDA = 62, 183, 190
_HOST_MACHINES = {"x86_64": EM_X86_64, "amd64": EM_X86_64, "aarch64": EM_AARCH64,
                  "arm64": EM_AARCH64}
_SHT_NOBITS = 8


def host_machine() -> int | None:
    """The ELF machine number of this host, or None where it is not known here."""
    return _HOST_MACHINES.get(platform.machine().lower())


def elf_ok(data: bytes, machine: int | None) -> bool:
    """True when ``data`` is a 64-bit little-endian ELF file for ``machine`` (any,
    if None) whose section header table and every section's contents lie within
    ``data``.  Ensures nothing about the code itself."""
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return False
    e_machine, = struct.unpack_from("<H", data, 18)
    if machine is not None and e_machine != machine:
        return False
    e_shoff, = struct.unpack_from("<Q", data, 40)
    e_shentsize, e_shnum = struct.unpack_from("<HH", data, 58)
    if e_shnum == 0:
        return e_shoff == 0
    if e_shentsize != 64 or e_shoff + e_shnum * 64 > len(data):
        return False
    for k in range(e_shnum):
        base = e_shoff + 64 * k
        sh_type, = struct.unpack_from("<I", data, base + 4)
        sh_offset, sh_size = struct.unpack_from("<QQ", data, base + 24)
        if sh_type != _SHT_NOBITS and sh_offset + sh_size > len(data):
            return False
    return True
