"""The User-Agent sent with every request, in s3torchconnector's form so that S3 access logs and
request metrics group s3torch traffic the same way:

    s3torch/<version> ua/2.1 os/<os>#<release> lang/python#<version> md/arch#<arch> md/pytorch#<version>
    [(<comment>; <comment> ...)]

Datasets add ``md/dataset#map|iterable md/reader_type#<kind>``, DCP ``dcp; <torch version>;
md/reader_type#<kind>``, Lightning ``lightning; <lightning version>``.
"""

from __future__ import annotations

import importlib.metadata
import platform
from functools import lru_cache
from typing import List, Optional


def package_version(name: str) -> Optional[str]:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def _default_prefix() -> str:
    os_name = platform.system().lower()
    if os_name == "darwin":
        os_name = "macos"
    parts = [
        f"s3torch/{package_version('s3torch') or '0.0.0'}",
        "ua/2.1",
        f"os/{os_name}#{platform.release()}",
        f"lang/python#{platform.python_version()}",
        f"md/arch#{platform.machine().lower()}",
    ]
    # From the installed metadata: importing torch here would cost a second for users who never need it.
    torch_version = package_version("torch")
    if torch_version:
        parts.append(f"md/pytorch#{torch_version}")
    return " ".join(parts)


class UserAgent:
    """``UserAgent(comments)``: the default prefix, plus ``(c1; c2; ...)`` when comments are given."""

    def __init__(self, comments: Optional[List[str]] = None) -> None:
        if comments is not None and not isinstance(comments, list):
            raise ValueError("Argument comments must be a List[str]")
        self._comments = comments or []

    @staticmethod
    def get_default_prefix() -> str:
        return _default_prefix()

    @property
    def prefix(self) -> str:
        comments = "; ".join(c for c in self._comments if c)
        return f"{_default_prefix()} ({comments})" if comments else _default_prefix()

    def __repr__(self) -> str:
        return f"UserAgent({self.prefix!r})"
