"""The drop-in promise, checked against s3torchconnector 1.5.0 itself (a test dependency, never a runtime
one): every public name of its top level, ``s3reader``, ``dcp`` and ``lightning`` exists in s3torch, and
every public function, method and constructor takes the same parameters in the same order with the same
kinds and defaults. s3torch's additions come after them and are keyword-only (or have defaults)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Iterator

import pytest

theirs_pkg = pytest.importorskip(
    "s3torchconnector"
)  # installed by the test extra; the check below fails if not
_NO_DEFAULT = inspect.Parameter.empty

MODULES = ["", ".s3reader", ".dcp", ".dcp.s3_prefix_strategy", ".lightning"]
# Public names each module is expected to have beyond its __all__ (imported there for users).
EXTRA_NAMES = {
    ".s3reader": ["DCPOptimizedConstructor", "ItemRange", "RangeGroup", "S3ReaderConstructorProtocol"],
    ".dcp.s3_prefix_strategy": ["RoundRobinPrefixStrategy"],
}


def test_the_reference_is_the_version_we_mirror():
    assert theirs_pkg.__version__ == "1.5.0"


def _public_names(module_suffix: str) -> list[str]:
    mod = importlib.import_module("s3torchconnector" + module_suffix)
    names = list(getattr(mod, "__all__", [n for n in vars(mod) if not n.startswith("_")]))
    return [n for n in names + EXTRA_NAMES.get(module_suffix, []) if n != "__version__"]


CASES = [(m, n) for m in MODULES for n in _public_names(m)]


def _default_repr(value: Any) -> Any:
    if value is _NO_DEFAULT:
        return "<required>"
    if callable(value):
        return getattr(value, "__name__", repr(value))
    return value


def _check_signature(where: str, theirs: Any, ours: Any) -> list[str]:
    try:
        sig_t = inspect.signature(theirs)
    except (TypeError, ValueError):
        return []  # a builtin without a signature: nothing to compare
    sig_o = inspect.signature(ours)
    p_t = [p for p in sig_t.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    p_o = list(sig_o.parameters.values())
    problems = []
    for i, pt in enumerate(p_t):
        if i >= len(p_o) or p_o[i].name != pt.name:
            got = [p.name for p in p_o]
            problems.append(
                f"{where}: parameter {i} should be {pt.name!r} ({[p.name for p in p_t]}), got {got}"
            )
            return problems
        po = p_o[i]
        if po.kind != pt.kind:
            problems.append(f"{where}: {pt.name} is {po.kind.description}, theirs {pt.kind.description}")
        if _default_repr(po.default) != _default_repr(pt.default):
            ours_d, theirs_d = _default_repr(po.default), _default_repr(pt.default)
            problems.append(f"{where}: {pt.name} defaults to {ours_d}, theirs {theirs_d}")
    for po in p_o[len(p_t) :]:
        extra_ok = (
            po.kind in (po.KEYWORD_ONLY, po.VAR_KEYWORD, po.VAR_POSITIONAL) or po.default is not _NO_DEFAULT
        )
        if not extra_ok:
            problems.append(
                f"{where}: our extra parameter {po.name!r} must be keyword-only or have a default"
            )
    return problems


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """Public methods, class and static methods, and the constructor, as defined on the class."""
    for name, value in vars(cls).items():
        if name.startswith("_") and name != "__init__":
            continue
        if isinstance(value, (staticmethod, classmethod)):
            yield name, getattr(cls, name)
        elif inspect.isfunction(value):
            yield name, value


@pytest.mark.parametrize("module,name", CASES, ids=[f"s3torchconnector{m}.{n}" for m, n in CASES])
def test_same_name_and_signatures(module, name):
    theirs = getattr(importlib.import_module("s3torchconnector" + module), name)
    ours_mod = importlib.import_module("s3torch" + module)
    assert hasattr(ours_mod, name), f"s3torch{module} lacks {name}"
    ours = getattr(ours_mod, name)
    problems: list[str] = []
    if inspect.isclass(theirs):
        assert inspect.isclass(ours), f"{name} is a class in the reference"
        if dataclass_fields := getattr(theirs, "__dataclass_fields__", None):
            ours_fields = list(getattr(ours, "__dataclass_fields__", {}))
            assert ours_fields[: len(dataclass_fields)] == list(dataclass_fields), name
        for member, theirs_fn in _members(theirs):
            ours_fn = getattr(ours, member, None)
            if ours_fn is None:
                problems.append(f"{name}.{member} is missing")
                continue
            problems += _check_signature(f"{name}.{member}", theirs_fn, ours_fn)
    elif callable(theirs):
        problems += _check_signature(name, theirs, ours)
    assert not problems, "\n".join(problems)


def test_exceptions_and_version_are_there():
    import s3torch

    assert issubclass(s3torch.S3Exception, Exception)
    assert s3torch.__version__ == importlib.metadata.version("s3torch")
