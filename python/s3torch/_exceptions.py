"""Exception hierarchy shared by the native core and the Python layer.

`S3Exception` derives from OSError so that generic I/O handlers catch it; subclasses also derive from the
builtin a Python user would catch (FileNotFoundError, PermissionError). All of them pickle, so errors raised
in DataLoader workers reach the parent intact.
"""

from __future__ import annotations

from typing import Optional


class S3Exception(OSError):
    """An S3 request failed.

    Attributes: ``bucket``, ``key``, ``status`` (HTTP status, 0 if none), ``code`` (S3 error code such as
    ``NoSuchKey``, or a CRT error name), ``request_id`` and ``operation``.
    """

    def __init__(
        self,
        message: str,
        *,
        bucket: str = "",
        key: str = "",
        status: int = 0,
        code: str = "",
        request_id: str = "",
        operation: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.bucket = bucket
        self.key = key
        self.status = status
        self.code = code
        self.request_id = request_id
        self.operation = operation

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):
        kwargs = {
            "bucket": self.bucket,
            "key": self.key,
            "status": self.status,
            "code": self.code,
            "request_id": self.request_id,
            "operation": self.operation,
        }
        return (_rebuild, (type(self), self.message, kwargs))


def _rebuild(cls, message, kwargs):
    return cls(message, **kwargs)


class S3NotFoundError(S3Exception, FileNotFoundError):
    """The bucket or the object does not exist."""


class S3PermissionError(S3Exception, PermissionError):
    """Access denied, or the request signature did not verify (wrong credentials)."""


_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchUpload"}
_PERMISSION_CODES = {
    "AccessDenied",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "Forbidden",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidToken",
}


def make_s3_exception(
    message: str,
    *,
    bucket: str = "",
    key: str = "",
    status: int = 0,
    code: str = "",
    request_id: str = "",
    operation: str = "",
) -> S3Exception:
    """Pick the subclass for an error from its status and code."""
    cls: type = S3Exception
    if code in _NOT_FOUND_CODES or (status == 404 and not code):
        cls = S3NotFoundError
    elif code in _PERMISSION_CODES or status in (401, 403):
        cls = S3PermissionError
    return cls(
        message,
        bucket=bucket,
        key=key,
        status=status,
        code=code,
        request_id=request_id,
        operation=operation,
    )


def describe(bucket: Optional[str], key: Optional[str]) -> str:
    if bucket and key:
        return f"s3://{bucket}/{key}"
    if bucket:
        return f"s3://{bucket}"
    return "S3"
