"""
s3torch native core: AWS CRT S3 client, pinned part-buffer pool, zero-copy streams
"""

from collections.abc import Sequence


def set_crt_log_level(level: int) -> None:
    """
    Level of the CRT messages queued for Python's logging (aws_log_level: 0 none ... 6 trace)
    """

def crt_log_level() -> int: ...

def crt_log_dropped() -> int:
    """CRT messages dropped because the queue was full"""

def wait_crt_log_records(timeout_ms: int) -> list:
    """
    Queued CRT messages as (level, subject, text), waiting up to timeout_ms for one
    """

def crc32(data: object, value: int = 0) -> int:
    """
    zlib's CRC-32 of a buffer, continuing from `value` (VPCLMULQDQ or PCLMULQDQ folding where the CPU has it; the GIL released)
    """

def default_memory_limit(throughput_target_gbps: float) -> int:
    """
    The CRT's part-buffer memory limit for a throughput target when none is configured
    """

class Chunk:
    """
    Bytes of an object in a pinned part buffer; supports the buffer protocol without copying
    """

    def __len__(self) -> int: ...

    @property
    def offset(self) -> int:
        """object offset of the first byte"""

    @property
    def address(self) -> int: ...

    def __repr__(self) -> str: ...

class GetObjectStream:
    def __iter__(self) -> object: ...

    def __next__(self) -> Chunk: ...

    def next_chunk(self, max_size: int) -> Chunk | None:
        """
        The next chunk, at most max_size bytes of it (the rest stays queued); None at the end
        """

    def read_into(self, buffer: object) -> int: ...

    def read(self, size: int = -1) -> bytes:
        """Next `size` bytes (all that remain if negative) as one bytes object"""

    def peek(self, size: int) -> bytes:
        """The next `size` bytes without consuming them (fewer only at the end)"""

    def skip(self, size: int) -> int:
        """
        Discards the next `size` bytes; returns how many (fewer only at the end)
        """

    def remaining(self) -> int: ...

    def close(self) -> None: ...

    def tell(self) -> int: ...

    @property
    def bucket(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def start(self) -> int | None: ...

    @property
    def end(self) -> int | None: ...

    @property
    def object_size(self) -> int | None: ...

    @property
    def closed(self) -> bool: ...

class DirectGet:
    """A ranged GET receiving straight into a caller's buffer"""

    def wait(self) -> None:
        """
        Blocks until every byte is in the buffer; raises S3Exception if the GET failed
        """

    def cancel(self) -> None:
        """Stops the GET and waits until it can no longer write to the buffer"""

    @property
    def done(self) -> bool: ...

    @property
    def bucket(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def start(self) -> int: ...

    @property
    def end(self) -> int: ...

SCATTER: bool = True

class Prefault:
    """
    Maps in the pages of writable buffers that a transfer is about to fill, from a thread, if they add up to 32 MiB or more (fresh memory: cheaper than a fault per page on the threads that receive the bytes)
    """

    def __init__(self, buffers: Sequence) -> None: ...

    def close(self) -> None:
        """Stops the thread (at its next 8 MiB step) and releases the buffers"""

    @property
    def mapped(self) -> int:
        """Bytes mapped in so far"""

    @property
    def finished(self) -> bool:
        """Whether its thread has stopped (or never started)"""

    @staticmethod
    def supported() -> bool:
        """
        Whether this kernel maps memory in on request (MADV_POPULATE_WRITE, Linux 5.14)
        """

class EtagPin:
    """
    The object version (ETag) that the GETs given this pin must all read: the first response's, then sent as If-Match
    """

    def __init__(self) -> None: ...

    def check(self, etag: str) -> bool:
        """
        Pins `etag` if none is pinned yet; returns whether it matches the pinned one
        """

    @property
    def etag(self) -> str | None: ...

class UploadLoan:
    """
    Caller memory an upload sends parts from in place (PutObjectStream.write_lent)
    """

    @property
    def returned(self) -> bool:
        """whether the CRT let go of every part lent over it"""

class PutObjectStream:
    def write(self, data: object) -> int: ...

    def write_lent(self, data: object, loan: UploadLoan, owner_start: int, owner_end: int) -> int:
        """
        write() of bytes inside [owner_start, owner_end), memory the caller keeps valid and unchanged until `loan` (from new_loan()) came back: whole parts inside them are sent from them in place
        """

    def new_loan(self) -> UploadLoan:
        """a loan for write_lent, counted with the stream's others"""

    def close(self) -> None: ...

    def abort(self) -> None: ...

    @property
    def bytes_written(self) -> int: ...

    @property
    def part_size(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    @property
    def bucket(self) -> str: ...

    @property
    def key(self) -> str: ...

class Client:
    def __init__(self, region: str, endpoint: str = '', user_agent_prefix: str = '', profile: str = '', throughput_target_gbps: float = 10.0, part_size: int = 8388608, unsigned: bool = False, force_path_style: bool = False, max_attempts: int = 10, memory_limit_bytes: int = 0, read_timeout_s: int = 0, upload_checksum: bool = True, requester_pays: bool = False, download_checksum: bool = True) -> None: ...

    def get(self, bucket: str, key: str, start: int | None = None, end: int | None = None, scatter: object | None = None, pin: EtagPin | None = None) -> GetObjectStream:
        """
        A GET stream of [start, end). `scatter`: (object offset, writable buffer) pairs whose bytes are written straight into the buffers as they arrive; the stream's bytes at those offsets are unspecified (skip them)
        """

    def get_into(self, bucket: str, key: str, start: int, buffer: object, part_size: int = 0, pin: EtagPin | None = None) -> DirectGet:
        """
        Starts a GET of bytes [start, start + len(buffer)) straight into the writable buffer
        """

    def get_bytes(self, bucket: str, key: str, start: int, end: int, pin: EtagPin | None = None, whole_object: bool = False, prefix: object | None = None) -> object:
        """
        Bytes [start, end) of the object as a new bytes object, received straight into it. whole_object: [0, end) is the whole object (its size from a listing), read so that it is checked against the checksum the server stored (Client.get_whole). prefix: bytes [start, start + len(prefix)) already received (copied in; only the rest is requested)
        """

    def put(self, bucket: str, key: str, storage_class: str = '') -> PutObjectStream: ...

    def head(self, arg0: str, arg1: str, /) -> object: ...

    def list(self, arg0: str, arg1: str, arg2: str, arg3: int, arg4: str, /) -> tuple: ...

    @property
    def read_window(self) -> int:
        """Bytes a GET stream may run ahead of its consumer (read backpressure)"""

    def request_url(self, bucket: str, key: str) -> str:
        """Where a request for bucket/key goes (path style or virtual-hosted)"""

    def delete(self, arg0: str, arg1: str, /) -> None: ...

    def copy(self, arg0: str, arg1: str, arg2: str, arg3: str, /) -> None: ...

    def pool_stats(self) -> dict: ...

    def register_host_memory(self, cuda_runtime: str, device: int) -> None:
        """
        Registers the pool's slabs, now and later, with the CUDA runtime library `cuda_runtime` (cudaHostRegister, for `device`), so that copies from part buffers to the GPU are DMA
        """

    def counters(self) -> dict: ...
