"""The CMake configure of the extension: the bundled CRT is the default, an installed one is used only when
asked and then checked feature by feature, the awscrt sdist is hash-checked, builds offline from
S3TORCH_CRT_SDIST, says what to do when it cannot be had, and two builds at once share one cache safely.

These run CMake's configure step only (no extension build); the offline test builds the CRT once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CRT_VERSION = "0.38.0"


def _cache_root() -> Path:
    """Where third_party/crt.cmake keeps its builds (the same resolution)."""
    if "S3TORCH_CRT_CACHE" in os.environ:
        return Path(os.environ["S3TORCH_CRT_CACHE"])
    if "XDG_CACHE_HOME" in os.environ:
        return Path(os.environ["XDG_CACHE_HOME"]) / "s3torch"
    return Path.home() / ".cache" / "s3torch"


def _offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """pip can reach no index and no find-links: what a compute node without internet sees."""
    empty = tmp_path / "no-packages"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "S3TORCH_CRT"))}
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty), PIP_CONFIG_FILE=os.devnull)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def configure(build: Path, *defines: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    cmake = shutil.which("cmake", path=str(BIN)) or "cmake"
    cmd = [cmake, "-S", str(REPO), "-B", str(build), f"-DPython_EXECUTABLE={sys.executable}", *defines]
    if shutil.which("ninja", path=str(BIN)):
        cmd[1:1] = ["-G", "Ninja"]
    if env is None:
        env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)


def _bundled_prefix(tmp_path: Path) -> Path:
    """The bundled CRT's install prefix, from a default configure (setup.sh has built it)."""
    done = configure(tmp_path / "default")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    marker = f"s3torch: using AWS CRT {CRT_VERSION} from "
    line = next(ln for ln in done.stdout.splitlines() if marker in ln)
    prefix = Path(line.split(marker, 1)[1].strip())
    assert (prefix / ".complete").is_file()
    assert "ticket-append (scatter) support: ON" in done.stdout
    return prefix


@pytest.fixture(scope="module")
def installed_crt(tmp_path_factory) -> Path:
    """A copy of the bundled CRT outside the cache: stands in for a CRT installed on the machine."""
    tmp = tmp_path_factory.mktemp("crt")
    copy = tmp / "installed"
    shutil.copytree(_bundled_prefix(tmp), copy)
    return copy


def test_the_bundled_crt_is_the_default_even_with_an_installed_one_on_the_path(installed_crt, tmp_path):
    done = configure(tmp_path / "b", f"-DCMAKE_PREFIX_PATH={installed_crt}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"using AWS CRT {CRT_VERSION} from {_cache_root()}" in done.stdout
    assert "installed AWS CRT" not in done.stdout
    assert "ticket-append (scatter) support: ON" in done.stdout


def test_an_installed_crt_is_used_when_asked_and_checked(installed_crt, tmp_path):
    done = configure(tmp_path / "b", "-DS3TORCH_USE_SYSTEM_CRT=ON", f"-DCMAKE_PREFIX_PATH={installed_crt}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"using installed AWS CRT from {installed_crt}" in done.stdout
    assert "the installed AWS CRT has every feature s3torch needs" in done.stdout
    assert "ticket-append (scatter) support: ON" in done.stdout


def test_an_installed_crt_without_our_patch_builds_without_scatter_and_says_so(installed_crt, tmp_path):
    crt = tmp_path / "unpatched"
    shutil.copytree(installed_crt, crt)
    header = crt / "include" / "aws" / "s3" / "s3_buffer_pool.h"
    text = header.read_text()
    start = text.index("\n    /* s3torch: optional.")
    header.write_text(text[:start] + text[text.index("\n};", start) :])
    done = configure(tmp_path / "b", "-DS3TORCH_USE_SYSTEM_CRT=ON", f"-DCMAKE_PREFIX_PATH={crt}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ticket-append (scatter) support: OFF" in done.stdout
    assert "building without scatter" in " ".join(done.stderr.split())


def test_an_installed_crt_that_lacks_features_fails_the_configure_naming_them(installed_crt, tmp_path):
    crt = tmp_path / "old"
    shutil.copytree(installed_crt, crt)
    header = crt / "include" / "aws" / "s3" / "s3_client.h"
    text = header.read_text()
    for member in ("bool enable_read_backpressure;", "monitoring_options;"):
        assert member in text
        text = text.replace(member, member.replace(";", "_renamed;"), 1)
    header.write_text(text)
    done = configure(tmp_path / "b", "-DS3TORCH_USE_SYSTEM_CRT=ON", f"-DCMAKE_PREFIX_PATH={crt}")
    assert done.returncode != 0
    err = " ".join(done.stderr.split())
    assert "lacks features s3torch needs" in err
    assert "read backpressure (enable_read_backpressure, initial_read_window)" in err
    assert "connection monitoring (monitoring_options)" in err
    assert "custom buffer pool" not in err and "checksum configuration" not in err


def test_asking_for_an_installed_crt_when_there_is_none_says_so(tmp_path):
    done = configure(tmp_path / "b", "-DS3TORCH_USE_SYSTEM_CRT=ON", f"-DCMAKE_PREFIX_PATH={tmp_path}")
    assert done.returncode != 0
    assert "no installed AWS CRT was found" in " ".join(done.stderr.split())


def test_an_sdist_with_the_wrong_hash_is_refused(tmp_path):
    bogus = tmp_path / f"awscrt-{CRT_VERSION}.tar.gz"
    with tarfile.open(bogus, "w:gz") as tar:
        tar.add(__file__, arcname=f"awscrt-{CRT_VERSION}/crt/README")
    env = _offline_env(tmp_path, S3TORCH_CRT_CACHE=str(tmp_path / "cache"), S3TORCH_CRT_SDIST=str(bogus))
    done = configure(tmp_path / "b", env=env)
    assert done.returncode != 0
    err = " ".join(done.stderr.split())
    assert "has SHA-256" in err and "refusing to build it" in err
    assert not list((tmp_path / "cache").glob("crt-*/.complete"))


def test_without_sdist_or_index_the_error_says_what_to_do(tmp_path):
    env = _offline_env(tmp_path, S3TORCH_CRT_CACHE=str(tmp_path / "cache"))
    done = configure(tmp_path / "b", env=env)
    assert done.returncode != 0
    err = " ".join(done.stderr.split())
    assert f"could not download the awscrt=={CRT_VERSION} source archive" in err
    assert "S3TORCH_CRT_SDIST" in err and "S3TORCH_USE_SYSTEM_CRT=ON" in err


@pytest.mark.slow
def test_offline_build_from_the_given_sdist_and_two_builds_at_once_share_the_cache(tmp_path):
    sdist = _cache_root() / f"awscrt-{CRT_VERSION}.tar.gz"
    assert sdist.is_file(), "scripts/setup.sh keeps the verified sdist in the CRT cache"
    given = tmp_path / sdist.name
    shutil.copy(sdist, given)
    cache = tmp_path / "cache"
    env = _offline_env(tmp_path, S3TORCH_CRT_CACHE=str(cache), S3TORCH_CRT_SDIST=str(given))
    results: dict[int, subprocess.CompletedProcess] = {}

    def run(n: int) -> None:
        results[n] = configure(tmp_path / f"b{n}", env=env)

    threads = [threading.Thread(target=run, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for done in results.values():
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert f"using AWS CRT {CRT_VERSION} from {cache}" in done.stdout
        assert "ticket-append (scatter) support: ON" in done.stdout
        assert "downloading" not in done.stdout
    builds = [done for done in results.values() if "building the AWS CRT" in done.stdout]
    assert len(builds) == 1, "the second configure must wait for the first one's build and reuse it"
    assert "applied 0001-s2n-skip-default-config-ca-load.patch" in builds[0].stdout
    assert len(list(cache.glob("crt-*/.complete"))) == 1
    assert not list(cache.glob("work-*")), "the work dir is removed after a successful build"


def test_the_sdist_carries_the_crt_build_and_its_patches(tmp_path):
    """What an offline `pip install s3torch-*.tar.gz` (with S3TORCH_CRT_SDIST) needs is in the sdist."""
    import tarfile

    from scikit_build_core.build import build_sdist

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        name = build_sdist(str(tmp_path))
    finally:
        os.chdir(cwd)
    with tarfile.open(tmp_path / name) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for needed in (
        "CMakeLists.txt",
        "pyproject.toml",
        "third_party/crt.cmake",
        "third_party/apply_patches.py",
        "third_party/patches/0001-s2n-skip-default-config-ca-load.patch",
        "third_party/patches/0002-aws-c-s3-ticket-append.patch",
        "third_party/patches/0003-aws-c-s3-checksum-header-case.patch",
        "third_party/patches/0004-aws-c-s3-resend-damaged-bodies.patch",
        "third_party/patches/0005-aws-c-s3-size-body-by-content-length.patch",
        "scripts/zig/cc",
        "cpp/bindings/module.cpp",
        "python/s3torch/py.typed",
    ):
        assert needed in names, needed
