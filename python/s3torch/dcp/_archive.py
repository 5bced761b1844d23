"""Streaming parser for the torch.save archive DCP writes for each tensor item.

DCP (torch's FileSystemWriter with the TORCH_SAVE format) stores every tensor item as its own
``torch.save`` archive: an uncompressed zip whose records come in a fixed order (``data.pkl``, a
few small text records, then the storage record ``data/0`` with its payload 64-byte aligned, then
trailing records and the central directory). The writer streams, so local headers carry no sizes
(flag bit 3: sizes follow the payload in a data descriptor). That order tells us, from the first
few hundred bytes of an item, where the raw tensor bytes start and how many there are, so we can
copy them straight from the network buffers into the destination tensor.

``data.pkl`` is decoded with torch's own weights-only unpickler (same safety as ``torch.load(...,
weights_only=True)``) and the storage it references is materialised on the ``meta`` device, so
we get the exact dtype/size/stride/storage offset torch.load would produce without the data.

Anything unexpected raises :class:`UnsupportedArchive` and the caller falls back to ``torch.load``.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch

_LOCAL_SIG = b"PK\x03\x04"
_DESC_SIG = b"PK\x07\x08"
_CD_SIG = b"PK\x01\x02"
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # 30 bytes
_CD_HEADER = struct.Struct("<4sHHHHHHIIIHHHHHII")  # 46 bytes
_FLAG_DATA_DESCRIPTOR = 0x08
_METHOD_STORED = 0
_U32_MAX = 0xFFFFFFFF
# Small text records (.format_version, byteorder, ...) are a few bytes; anything larger is not a
# layout we know, so we give up instead of scanning far.
_MAX_SMALL_RECORD = 4096
_MAX_PICKLE = 64 * 1024  # a tensor's data.pkl is a few hundred bytes


class NeedMoreBytes(Exception):
    """The head parser needs at least ``n`` bytes of the item (from its start)."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.n = n


class UnsupportedArchive(Exception):
    """Not a layout we can read in place: use torch.load on the item's bytes instead."""


@dataclass(frozen=True)
class ArchiveHead:
    """Where an item's tensor bytes are, and what torch.load would build from them."""

    record_name: str  # e.g. "archive/data/0"
    header_offset: int  # item offset of the storage record's local header
    data_offset: int  # item offset of the first raw storage byte
    nbytes: int  # size of the storage record payload
    has_descriptor: bool  # a data descriptor follows the payload
    meta: torch.Tensor  # meta-device tensor with the saved dtype/size/stride/storage_offset

    @property
    def data_end(self) -> int:
        return self.data_offset + self.nbytes

    @property
    def descriptor_size(self) -> int:
        return descriptor_size(self.header_offset, self.nbytes) if self.has_descriptor else 0


def descriptor_size(header_offset: int, nbytes: int) -> int:
    """Bytes of the data descriptor after a record's payload. Same rule as miniz and
    torch.serialization._load: the zip64 descriptor when the offset or the size overflows."""
    return 24 if (header_offset >= _U32_MAX or nbytes >= _U32_MAX) else 16


def _read_local_header(buf: memoryview, pos: int) -> Tuple[str, int, int, int]:
    """Returns (name, flags, method, payload_offset) of the local header at ``pos``."""
    end = pos + _LOCAL_HEADER.size
    if len(buf) < end:
        raise NeedMoreBytes(end)
    sig, _ver, flags, method, _t, _d, _crc, _cs, _us, nlen, elen = _LOCAL_HEADER.unpack_from(buf, pos)
    if sig != _LOCAL_SIG:
        raise UnsupportedArchive(f"no zip local header at item offset {pos}")
    payload = end + nlen + elen
    if len(buf) < payload:
        raise NeedMoreBytes(payload)
    try:
        name = bytes(buf[end : end + nlen]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnsupportedArchive("record name is not UTF-8") from e
    return name, flags, method, payload


class _MetaStorageUnpickler:
    """Runs torch's weights-only unpickler; storages become meta storages (no data needed)."""

    def __init__(self) -> None:
        self.storages: List[Tuple[str, torch.dtype, int]] = []  # (key, dtype, nbytes)

    def persistent_load(self, saved_id: Any) -> Any:
        if not isinstance(saved_id, tuple) or len(saved_id) != 5:
            raise UnsupportedArchive("unexpected persistent id")
        typename, storage_type, key, _location, numel = saved_id
        if torch.serialization._maybe_decode_ascii(typename) != "storage":
            raise UnsupportedArchive("persistent id is not a storage")
        dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
        key = torch.serialization._maybe_decode_ascii(key)
        nbytes = numel * torch._utils._element_size(dtype)
        self.storages.append((key, dtype, nbytes))
        return torch.storage.TypedStorage(
            wrap_storage=torch.UntypedStorage(nbytes, device="meta"), dtype=dtype, _internal=True
        )

    def load(self, data: bytes) -> Tuple[Any, int]:
        """Unpickles ``data``; returns (object, number of bytes the pickle used)."""
        from torch import _weights_only_unpickler

        f = io.BytesIO(data)
        unpickler = _weights_only_unpickler.Unpickler(f, encoding="utf-8")
        unpickler.persistent_load = self.persistent_load  # type: ignore[method-assign]
        obj = unpickler.load()
        return obj, f.tell()


def _find_small_record_end(buf: memoryview, start: int, limit: int = _MAX_SMALL_RECORD) -> int:
    """End of a small streamed record whose payload starts at ``start``.

    Its size is only in the descriptor after it, so we look for a descriptor whose CRC and sizes
    both match the bytes before it: a false match would need a CRC collision on the same length.
    Archives saved with ``torch.serialization.set_crc32_options(False)`` write a zero CRC: such a
    descriptor counts when its sizes match and the next record's signature follows it.
    """
    span = limit + 20  # a descriptor (16 bytes) and the signature after it
    raw = bytes(buf[start : start + span])
    at = 0
    while True:
        at = raw.find(_DESC_SIG, at)
        if at < 0 or at + 20 > len(raw):
            if start + span <= len(buf):
                raise UnsupportedArchive("record larger than expected")
            raise NeedMoreBytes(min(max(len(buf) * 2, start + at + 20), start + span))
        crc, csize, usize = struct.unpack_from("<III", raw, at + 4)
        if csize == usize == at:
            if crc == zlib.crc32(raw[:at]):
                return start + at
            if crc == 0 and raw[at + 16 : at + 20] in (_LOCAL_SIG, _CD_SIG):
                return start + at
        at += 1


def parse_head(buf: memoryview, item_length: int) -> ArchiveHead:
    """Parses the start of a torch.save archive of one tensor.

    ``buf`` holds the first bytes of the item (``len(buf) <= item_length``). Raises
    :class:`NeedMoreBytes` when more of the item is needed and :class:`UnsupportedArchive` when the
    layout is not one we can read in place.
    """
    try:
        return _parse_head(buf)
    except NeedMoreBytes as e:
        if len(buf) >= item_length:
            raise UnsupportedArchive("archive head runs past the item's end") from e
        raise NeedMoreBytes(min(max(e.n, len(buf) + 1), item_length)) from None


def _parse_head(buf: memoryview) -> ArchiveHead:
    name, flags, method, pkl_start = _read_local_header(buf, 0)
    if not name.endswith("data.pkl") or method != _METHOD_STORED:
        raise UnsupportedArchive(f"first record is {name!r} (method {method}), not a stored data.pkl")
    prefix = name[: -len("data.pkl")]

    # The pickle's size is only in the descriptor after it: find that first, then decode exactly it.
    if not flags & _FLAG_DATA_DESCRIPTOR:
        raise UnsupportedArchive("data.pkl without a descriptor")
    pkl_end = _find_small_record_end(buf, pkl_start, _MAX_PICKLE)
    unpickler = _MetaStorageUnpickler()
    try:
        obj, pkl_len = unpickler.load(bytes(buf[pkl_start:pkl_end]))
    except UnsupportedArchive:
        raise
    except Exception as e:  # weights-only refusals and anything odd: let torch.load decide
        raise UnsupportedArchive(f"data.pkl: {e}") from e
    if pkl_len != pkl_end - pkl_start:
        raise UnsupportedArchive("data.pkl has trailing bytes")
    if type(obj) is not torch.Tensor or obj.device.type != "meta" or obj.layout != torch.strided:
        raise UnsupportedArchive(f"data.pkl holds {type(obj).__name__}, not a plain dense tensor")
    if len(unpickler.storages) != 1:
        raise UnsupportedArchive("tensor archive with more than one storage")
    # The storage may be typed or untyped (newer dtypes): only its bytes matter; `meta` is the view.
    key, _storage_dtype, nbytes = unpickler.storages[0]
    pos = pkl_end + 16

    byteorder: Optional[str] = None
    storage_name = f"{prefix}data/{key}"
    while True:
        name, flags, method, payload = _read_local_header(buf, pos)
        if method != _METHOD_STORED:
            raise UnsupportedArchive(f"record {name!r} is compressed")
        if name == storage_name:
            break
        if name.startswith(f"{prefix}data/"):
            raise UnsupportedArchive(f"unexpected storage record {name!r}")
        if not flags & _FLAG_DATA_DESCRIPTOR:
            raise UnsupportedArchive(f"record {name!r} without a descriptor")
        end = _find_small_record_end(buf, payload)
        if name == f"{prefix}byteorder":
            byteorder = bytes(buf[payload:end]).decode("ascii", "replace")
        pos = end + 16

    # torch byteswaps foreign-endian archives and assumes little endian without a mark: leave both
    # to torch.load rather than guess.
    if byteorder != sys.byteorder:
        raise UnsupportedArchive(f"byteorder {byteorder!r} is not native {sys.byteorder!r}")
    return ArchiveHead(
        record_name=storage_name,
        header_offset=pos,
        data_offset=payload,
        nbytes=nbytes,
        has_descriptor=bool(flags & _FLAG_DATA_DESCRIPTOR),
        meta=obj,
    )


def check_tail(head: ArchiveHead, tail: memoryview) -> None:
    """Checks the bytes after the storage payload (descriptor, trailing records, central directory).

    ``tail`` is the item from ``head.data_end`` to its end. Raises :class:`UnsupportedArchive` if
    the archive is not what :func:`parse_head` assumed: the caller then re-reads the item with
    torch.load.
    """
    pos = 0
    if head.has_descriptor:
        n = head.descriptor_size
        if len(tail) < n:
            raise UnsupportedArchive("archive ends inside the storage descriptor")
        if n == 16:
            sig, _crc, csize, usize = struct.unpack_from("<4sIII", tail, 0)
        else:
            sig, _crc, csize, usize = struct.unpack_from("<4sIQQ", tail, 0)
        if sig != _DESC_SIG or csize != head.nbytes or usize != head.nbytes:
            raise UnsupportedArchive("storage descriptor does not match the payload size")
        pos = n

    # The central directory entry of the storage record must agree with what we read.
    raw = bytes(tail[pos:])
    name = head.record_name.encode("utf-8")
    at = 0
    while True:
        at = raw.find(_CD_SIG, at)
        if at < 0 or at + _CD_HEADER.size > len(raw):
            raise UnsupportedArchive("storage record missing from the central directory")
        fields = _CD_HEADER.unpack_from(raw, at)
        method, csize, usize, nlen, elen = fields[4], fields[8], fields[9], fields[10], fields[11]
        offset = fields[16]
        start = at + _CD_HEADER.size
        if raw[start : start + nlen] != name:
            at += 1
            continue
        extra = raw[start + nlen : start + nlen + elen]
        usize, csize, offset = _apply_zip64(extra, usize, csize, offset)
        if method != _METHOD_STORED or usize != head.nbytes or csize != head.nbytes:
            raise UnsupportedArchive("central directory disagrees on the storage record")
        if offset != head.header_offset:
            raise UnsupportedArchive("central directory disagrees on the storage offset")
        return


def _apply_zip64(extra: bytes, usize: int, csize: int, offset: int) -> Tuple[int, int, int]:
    """Resolves 0xFFFFFFFF placeholders from the zip64 extra field (in the order the spec fixes)."""
    p = 0
    while p + 4 <= len(extra):
        hid, size = struct.unpack_from("<HH", extra, p)
        body = extra[p + 4 : p + 4 + size]
        if hid == 0x0001:
            q = 0
            vals = []
            for v in (usize, csize, offset):
                if v == _U32_MAX and q + 8 <= len(body):
                    vals.append(struct.unpack_from("<Q", body, q)[0])
                    q += 8
                else:
                    vals.append(v)
            return vals[0], vals[1], vals[2]
        p += 4 + size
    return usize, csize, offset
