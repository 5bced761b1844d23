"""``torch.save`` of one tensor item, with the zip CRC-32s computed as the bytes stream out.

torch.save checksums every record with miniz's table code, in a pass of its own over the tensor's
bytes before they are written: about 2 GB/s on memory that is not in cache, a quarter to a third of
a save's client CPU. Here torch's own archive writer (``PyTorchFileWriter``) writes the archive
with its checksums off, and ``_CrcSink`` computes them (``_core.crc32``, carry-less multiply, 22-66
GB/s on cache-hot data) on each slice just before the upload stream copies that slice, then
writes them into the data descriptor that follows each record and into the central directory,
which it holds back until they are known. The bytes are torch.save's bytes: ``fast_save_available``
compares the two writers once per process and falls back to torch.save on any difference.

Small tensors (a storage of at most ``_SMALL_ITEM`` bytes: biases, norms, optimizer steps) skip the
sink: the sink's bookkeeping costs a fixed 100-150 µs an item in Python, more than torch's own CRC of
so few bytes, so torch.save writes them into memory and the archive goes out in one write.
"""

from __future__ import annotations

import io
import pickle
import struct
import threading
from typing import Any, List, Optional

import torch

from .. import _core
from ._archive import (
    _CD_HEADER,
    _CD_SIG,
    _DESC_SIG,
    _LOCAL_HEADER,
    NeedMoreBytes,
    UnsupportedArchive,
    _apply_zip64,
    _read_local_header,
    descriptor_size,
)

_SLICE = 256 * 1024  # checksummed, then copied, while it is still in the CPU's cache
_SMALL_ITEM = 64 * 1024  # up to this many storage bytes, torch.save into memory is the cheaper writer
_DESC_MAX = 24  # a zip64 data descriptor; the short one is 16 bytes
_EOCD_SIG = b"PK\x05\x06"


class LayoutError(RuntimeError):
    """The archive torch wrote is not laid out as this module expects."""


class _CrcSink:
    """The file object PyTorchFileWriter writes to: forwards bytes to ``out`` and fills in CRCs.

    Around each record the caller calls ``begin_record`` / ``end_record``: the local header passes
    through, payload bytes are checksummed slice by slice as they are forwarded, and the last
    ``_DESC_MAX`` bytes are held back until the record ends, since they hold its data descriptor.
    Around ``write_end_of_file`` everything is held (the last records and the central directory,
    small) and ``end_archive`` patches their CRCs before forwarding.
    """

    def __init__(self, out: Any) -> None:
        self._out = out
        self._owner: Any = None
        self.pos = 0  # bytes received: the archive offset of the next byte
        self._mode = "pass"
        self._held = bytearray()
        self._error: Optional[LayoutError] = None
        self._described = True
        self.crcs: List[int] = []
        self.names: List[str] = []

    # -- file object
    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        self.pos += n
        if self._mode == "discard":
            return n
        if self._mode == "record":
            # Never raise to torch's C++ writer (its destructor writes too): end_record raises.
            try:
                self._record_bytes(view)
            except LayoutError as e:
                self._error = e
                self._mode = "discard"
        elif self._mode == "archive_end":
            self._held += view
        else:
            self._out.write(view)
        return n

    def discard(self) -> None:
        """Drop every later write (the save failed; torch's writer may still write on its way out)."""
        self._mode = "discard"

    def flush(self) -> None:
        flush = getattr(self._out, "flush", None)
        if flush is not None:
            flush()

    # -- records
    def begin_record(self, owner: Any = None) -> None:
        """``owner``: the record's storage, when its bytes may be lent to the upload (see _emit)."""
        self._mode = "record"
        self._owner = owner
        self._start = self.pos
        self._header = bytearray()
        self._header_need = _LOCAL_HEADER.size  # bytes of local header needed to parse it
        self._header_done = False
        self._crc = 0
        self._payload = 0
        self._held = bytearray()
        self._described = True
        self._error = None

    def _record_bytes(self, view: memoryview) -> None:
        i = 0
        while not self._header_done:
            if i >= len(view):
                return
            take = view[i : i + self._header_need - len(self._header)]
            self._header += take
            i += len(take)
            if len(self._header) < self._header_need:
                continue
            try:
                header = memoryview(bytes(self._header))
                _name, flags, _method, self._header_need = _read_local_header(header, 0)
            except NeedMoreBytes as e:
                self._header_need = e.n  # the name and extra field follow the fixed part
                continue
            except UnsupportedArchive as e:
                raise LayoutError(str(e)) from e
            # An empty record has its (zero) sizes and CRC in the header and no descriptor.
            self._described = bool(flags & 0x08)
            self._header_done = True
            self._out.write(bytes(self._header))
        rest = view[i:]
        if not rest:
            return
        # Hold back the last bytes: the data descriptor is among them once the record ends.
        if len(rest) >= _DESC_MAX:
            if self._held:
                self._emit(memoryview(bytes(self._held)), copied=True)
            self._emit(rest[: len(rest) - _DESC_MAX])
            self._held = bytearray(rest[len(rest) - _DESC_MAX :])
        else:
            self._held += rest
            if len(self._held) > _DESC_MAX:
                cut = len(self._held) - _DESC_MAX
                self._emit(memoryview(bytes(self._held[:cut])), copied=True)
                del self._held[:cut]

    def _emit(self, payload: memoryview, copied: bool = False) -> None:
        """Forwards record payload bytes; ``copied``: they are a copy (held-back bytes), not the
        storage's own memory, so there is nothing to lend."""
        n = len(payload)
        at = 0
        lend = getattr(self._out, "_write_lent", None) if self._owner is not None and not copied else None
        part = getattr(getattr(self._out, "stream", None), "part_size", 0) if lend is not None else 0
        if lend is not None and part:
            # A storage's bytes are sent from the storage itself, which holds still until the save
            # returns: no copy into a part buffer (whole parts are lent as the part's buffer, the
            # pieces around them share a part with other bytes). Up to each part boundary at a time,
            # so that the upload reads each piece soon after its checksum did.
            start = self._owner.data_ptr()
            end = start + self._owner.nbytes()
            while at < n:
                take = min(n - at, part - (self._out.tell() % part))
                piece = payload[at : at + take]
                self._crc = _core.crc32(piece, self._crc)
                lend(piece, self._owner, start, end)
                at += take
        self._copy_out(payload[at:])
        self._payload += n

    def _copy_out(self, payload: memoryview) -> None:
        for at in range(0, len(payload), _SLICE):
            piece = payload[at : at + _SLICE]
            self._crc = _core.crc32(piece, self._crc)
            self._out.write(piece)

    def end_record(self, name: str, nbytes: int) -> None:
        if self._error is not None:
            raise self._error
        if not self._described:
            if nbytes or self._held or not self._header_done:
                raise LayoutError(f"record {name}: {nbytes} bytes without a data descriptor")
            self.crcs.append(0)
            self.names.append(name)
            self._mode = "pass"
            return
        size = descriptor_size(self._start, nbytes)
        held = self._held
        if len(held) < size or held[len(held) - size : len(held) - size + 4] != _DESC_SIG:
            raise LayoutError(f"no data descriptor after record {name}")
        self._emit(memoryview(bytes(held[: len(held) - size])), copied=True)
        if self._payload != nbytes:
            raise LayoutError(f"record {name}: {self._payload} payload bytes, expected {nbytes}")
        descriptor = bytearray(held[len(held) - size :])
        struct.pack_into("<I", descriptor, 4, self._crc)
        self._out.write(bytes(descriptor))
        self.crcs.append(self._crc)
        self.names.append(name)
        self._held = bytearray()
        self._mode = "pass"

    # -- end of archive
    def begin_archive_end(self) -> None:
        self._mode = "archive_end"
        self._end_start = self.pos
        self._held = bytearray()

    def end_archive(self) -> None:
        buf, base = self._held, self._end_start
        eocd = len(buf) - 22
        if eocd < 0 or buf[eocd : eocd + 4] != _EOCD_SIG:
            raise LayoutError("no end of central directory record")
        at = buf.find(_CD_SIG)
        index = 0
        while 0 <= at < eocd and buf[at : at + 4] == _CD_SIG:
            fields = _CD_HEADER.unpack_from(buf, at)
            csize, usize, nlen, elen, clen = fields[8:13]
            offset = fields[16]
            name = bytes(buf[at + 46 : at + 46 + nlen]).decode()
            extra = buf[at + 46 + nlen : at + 46 + nlen + elen]
            if index < len(self.crcs):
                if not name.endswith(self.names[index]):
                    raise LayoutError(f"central directory entry {name} for record {self.names[index]}")
                crc = self.crcs[index]
            else:
                # Written by write_end_of_file itself: its payload is in the held bytes.
                usize, _csize, offset = _apply_zip64(bytes(extra), usize, csize, offset)
                crc = self._patch_held_record(buf, offset - base, usize, name)
            struct.pack_into("<I", buf, at + 16, crc)
            at += 46 + nlen + elen + clen
            index += 1
        if index == 0 or index < len(self.crcs):
            raise LayoutError("central directory entries missing")
        self._out.write(bytes(buf))
        self._mode = "pass"

    def _patch_held_record(self, buf: bytearray, at: int, size: int, name: str) -> int:
        if at < 0:
            raise LayoutError(f"record {name} is not in the archive's end")
        try:
            _name, flags, _method, start = _read_local_header(memoryview(bytes(buf)), at)
        except (NeedMoreBytes, UnsupportedArchive) as e:
            raise LayoutError(f"record {name}: {e}") from e
        if not flags & 0x08:
            if size:
                raise LayoutError(f"record {name}: {size} bytes without a data descriptor")
            return 0
        crc = _core.crc32(memoryview(buf)[start : start + size])
        desc = start + size
        if buf[desc : desc + 4] != _DESC_SIG:
            raise LayoutError(f"no data descriptor after record {name}")
        struct.pack_into("<I", buf, desc + 4, crc)
        return int(crc)


class _Records:
    """The zip writer torch.serialization._save writes to: marks each record for the sink."""

    def __init__(self, writer: Any, sink: _CrcSink) -> None:
        self._writer = writer
        self._sink = sink

    def write_record(self, name: str, data: Any, nbytes: int) -> None:
        # A CPU storage's bytes may be lent to the upload (the writer holds the storage until done).
        lendable = isinstance(data, torch.UntypedStorage) and data.device.type == "cpu" and nbytes > 0
        self._sink.begin_record(data if lendable else None)
        self._writer.write_record(name, data, nbytes)
        self._sink.end_record(name, nbytes)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._writer, attr)


def _save_fast(tensor: torch.Tensor, stream: Any) -> None:
    from torch import serialization

    sink = _CrcSink(stream)
    writer = torch._C.PyTorchFileWriter(sink, False, serialization._get_storage_alignment())
    try:
        serialization._save(tensor, _Records(writer, sink), pickle, serialization.DEFAULT_PROTOCOL, False)
        sink.begin_archive_end()
        writer.write_end_of_file()
        sink.end_archive()
    except BaseException:
        # Finish torch's writer into the discarding sink now: left unfinished, its destructor would
        # finish it later and throw from a destructor (std::terminate) after a failed write.
        sink.discard()
        try:
            writer.write_end_of_file()
        except Exception:  # noqa: BLE001 - the first error is the one raised
            pass
        raise
    sink.flush()


_checked: Optional[bool] = None
_check_lock = threading.Lock()


def fast_save_available() -> bool:
    """Whether ``save_tensor`` writes what torch.save writes, checked once per process."""
    global _checked
    with _check_lock:
        if _checked is None:
            _checked = _same_as_torch_save()
        return _checked


def _same_as_torch_save() -> bool:
    import zipfile

    try:
        samples = (
            torch.arange(1000, dtype=torch.float32),
            torch.ones(3, 5, dtype=torch.bfloat16).t(),
            torch.arange(300_000, dtype=torch.int32),  # several checksum slices
            torch.empty(0),
        )
        for sample in samples:
            ours, ref = io.BytesIO(), io.BytesIO()
            _save_fast(sample, ours)
            torch.save(sample, ref)
            a, b = zipfile.ZipFile(ours), zipfile.ZipFile(ref)
            if a.testzip() is not None or len(ours.getvalue()) != len(ref.getvalue()):
                return False
            layout_a = [(i.filename, i.header_offset, i.file_size) for i in a.infolist()]
            layout_b = [(i.filename, i.header_offset, i.file_size) for i in b.infolist()]
            if layout_a != layout_b:
                return False
            for info in a.infolist():
                if not info.filename.endswith("serialization_id") and a.read(info) != b.read(info):
                    return False
            ours.seek(0)
            if not torch.equal(torch.load(ours, weights_only=True), sample):
                return False
    except Exception:  # any surprise from torch's internals: use torch.save
        return False
    return True


def _storage_bytes(tensor: torch.Tensor) -> int:
    """What torch.save writes of ``tensor``: its whole storage; a large number where it has none
    (sparse and wrapper tensors), which then take the general path."""
    try:
        return tensor.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError, TypeError):
        return 1 << 62


def save_tensor(tensor: torch.Tensor, stream: Any) -> None:
    """``torch.save(tensor, stream)``, the CRCs computed as the bytes go out (see the module)."""
    from torch import serialization

    # Under torch.serialization.skip_data() torch writes no payloads (and seeks): its own writer.
    if getattr(getattr(serialization, "_serialization_tls", None), "skip_data", False):
        torch.save(tensor, stream)
    elif _storage_bytes(tensor) <= _SMALL_ITEM:
        buf = io.BytesIO()
        torch.save(tensor, buf)
        with buf.getbuffer() as archive:
            stream.write(archive)
        flush = getattr(stream, "flush", None)
        if flush is not None:
            flush()  # as torch.save and the sink do
    elif fast_save_available():
        _save_fast(tensor, stream)
    else:
        torch.save(tensor, stream)
