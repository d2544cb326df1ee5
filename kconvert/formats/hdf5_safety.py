"""Guards for reading untrusted HDF5 files: structure libhdf5 loops on, and links that leave the file.

- `check_global_heaps(path)` walks every global heap collection (`GCOL`, where variable-length strings such as
  Keras's attributes live) the way libhdf5's deserializer does, and refuses one whose objects do not tile the
  collection: libhdf5 1.14 spins forever on a zero-sized free-space object and reads past a collection whose
  objects overrun it. It also refuses a reference into a collection that claims far more bytes than its object
  holds (libhdf5 allocates the claimed length, up to 4 GiB, before it notices). Runs before h5py opens the file.
- `member(group, name)` is `group[name]` walked one path component at a time, resolving soft links itself, so that
  an external link (a pointer into another file) is refused instead of followed.
"""

from __future__ import annotations

import mmap
import os

from ..errors import FormatError

__all__ = ["check_global_heaps", "check_dataset_size", "member", "MAX_LINK_DEPTH"]

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_LINK_DEPTH = 16  # libhdf5's own limit on soft-link chains (H5L_NUM_LINKS)


# A variable-length value whose stored length exceeds its heap object by this much is refused before libhdf5
# allocates the stored length (up to 4 GiB per value) only to find the mismatch.
MAX_VLEN_EXCESS = 1 << 24


def _superblock(buf, size: int) -> tuple[int, int, int] | None:
    """(offset of the superblock, size of offsets, size of lengths) from the first signature at 0, 512, 1024, ..."""
    offset = 0
    while offset + 16 <= size:
        if buf[offset:offset + 8] == _SIGNATURE:
            version = buf[offset + 8]
            offsets, lengths = (buf[offset + 13], buf[offset + 14]) if version < 2 else (buf[offset + 9],
                                                                                         buf[offset + 10])
            return offset, offsets if offsets in (2, 4, 8) else 8, lengths if lengths in (2, 4, 8, 16) else 8
        offset = 512 if offset == 0 else offset * 2
    return None


def _check_collection(buf, start: int, size: int, lengths: int, path: str) -> dict[int, int] | None:
    """The collection's object sizes by index (None when these bytes are no collection); refuses a corrupt one."""
    header = 8 + lengths  # "GCOL", version, 3 reserved, collection size
    objhdr = 8 + lengths  # index, reference count, 4 reserved, object size
    if buf[start + 4] != 1 or buf[start + 5:start + 8] != b"\0\0\0":
        return None  # not a version-1 collection (libhdf5 refuses it itself), or these bytes are not a collection
    total = int.from_bytes(buf[start + 8:start + 8 + lengths], "little")
    end = start + total
    if total < header or end > size:
        raise FormatError(f"the global heap at byte {start} declares {total} bytes, past the end of the file "
                          "(truncated or corrupt?)", file=path)
    p = start + header
    objects: dict[int, int] = {}
    while p < end:
        if p + objhdr > end:
            break  # a tail too small for an object header is free space
        index = int.from_bytes(buf[p:p + 2], "little")
        length = int.from_bytes(buf[p + 8:p + 8 + lengths], "little")
        need = objhdr + (length + 7) // 8 * 8 if index else length
        if need < objhdr or p + need > end:
            raise FormatError(f"the global heap at byte {start} holds an object of {length} bytes at byte {p} that "
                              "does not fit it (corrupt)", file=path)
        if index:
            objects[index] = length
        p += need
    return objects


def _check_references(buf, size: int, address: bytes, objects: dict[int, int], path: str) -> None:
    """Refuse a variable-length reference (4-byte length, collection address, 4-byte index) into this collection
    whose length exceeds its object by more than MAX_VLEN_EXCESS. The address bytes are searched for; a match in
    unrelated data must also name an existing object and carry a huge length to be refused."""
    n = len(address)
    pos = buf.find(address, 4)
    while 0 <= pos <= size - n - 4:
        index = int.from_bytes(buf[pos + n:pos + n + 4], "little")
        length = int.from_bytes(buf[pos - 4:pos], "little")
        if index in objects and length > objects[index] + MAX_VLEN_EXCESS:
            raise FormatError(f"a variable-length value at byte {pos - 4} claims {length} bytes, its heap object "
                              f"holds {objects[index]} (corrupt)", file=path)
        pos = buf.find(address, pos + 1)


def check_global_heaps(path: str | os.PathLike) -> None:
    """Refuse an HDF5 file whose global heap collections libhdf5 would loop on or overrun (see module docstring)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as e:
        raise FormatError(f"cannot read the file: {e}", file=path) from None
    try:
        sb = _superblock(buf, size)
        if sb is None:
            return
        base, offsets, lengths = sb
        collections = {}
        pos = buf.find(b"GCOL", base)
        while pos >= 0:
            if pos + 8 + lengths <= size:
                objects = _check_collection(buf, pos, size, lengths, path)
                if objects:
                    collections[pos] = objects
            pos = buf.find(b"GCOL", pos + 4)
        if len(collections) <= 64:  # Keras writes a handful; the reference scan is one pass per collection
            for pos, objects in collections.items():
                _check_references(buf, size, (pos - base).to_bytes(offsets, "little"), objects, path)
    finally:
        buf.close()


def member(group, name: str, *, file, layer: str | None = None, _depth: int = 0):
    """`group[name]` without following external links (FormatError naming the link); None when absent."""
    import h5py

    if _depth > MAX_LINK_DEPTH:
        raise FormatError(f"'{name}': soft links nested deeper than {MAX_LINK_DEPTH} (a cycle?)", file=file,
                          layer=layer)
    obj = group.file if name.startswith("/") else group
    for part in name.split("/"):
        if not part or part == ".":
            continue
        if not isinstance(obj, h5py.Group):
            return None
        link = obj.get(part, getlink=True)
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink):
            raise FormatError(f"'{name}' is an external link to {link.filename}:{link.path}; kconvert never "
                              "follows links out of the file", file=file, layer=layer)
        if isinstance(link, h5py.SoftLink):
            obj = member(obj, link.path, file=file, layer=layer, _depth=_depth + 1)
            if obj is None:
                return None
        else:
            obj = obj[part]
    return obj


# A dataset may declare more bytes than it stores (compression, or unwritten fill values), but a weight that claims
# over this much and expands more than MAX_EXPANSION-fold is a bomb, not a model: refused before it is read.
SMALL_DATASET_BYTES = 1 << 24
MAX_EXPANSION = 100


def check_dataset_size(ds, *, file, where: str, layer: str | None = None) -> None:
    """Refuse a dataset whose declared size is out of all proportion to the bytes it stores (before reading it)."""
    import numpy as np

    try:
        nbytes = int(np.prod(ds.shape, dtype=object)) * ds.dtype.itemsize if ds.shape else ds.dtype.itemsize
        stored = ds.id.get_storage_size()
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        raise FormatError(f"cannot read the layout of {where}: {e}", file=file, layer=layer) from None
    if nbytes > SMALL_DATASET_BYTES and nbytes > MAX_EXPANSION * stored:
        raise FormatError(f"{where} declares shape {ds.shape} ({nbytes} bytes) but the file stores {stored} bytes "
                          "of it (corrupt, or a decompression bomb)", file=file, layer=layer)
