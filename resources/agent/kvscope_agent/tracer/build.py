"""Builds the CUPTI injection library (kvscope_cupti.c) on the GPU host, with the host's own C
compiler and CUPTI, and caches it by a hash of everything that goes into it.

The agent is deployed as source (docs/desktop.md, "Running on a GPU host"): nothing prebuilt can match every
host's CUDA, so the library is compiled where it runs. CUPTI is looked for, in this order, under
`--cuda-home`, `$CUDA_HOME`, `/usr/local/cuda`, and the NVIDIA pip packages of the running Python
(`nvidia/cu13/` in CUDA 13 wheels, `nvidia/cuda_cupti/` in CUDA 12 ones), which is where a
PyTorch-only host keeps its CUPTI.

`python3 -m kvscope_agent build-tracer [--cuda-home DIR] --out DIR` prints the library's path;
exit 1 with a message naming what is missing (and how to get it) when there is no compiler or
no CUPTI; exit 2 on a bad option.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from typing import Iterable, Sequence

TRACER_DIR = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("kvscope_cupti.c", "kvscope_record.h")
LIBRARY_PREFIX = "libkvscope_cupti-"
CFLAGS = ("-shared", "-fPIC", "-O2", "-std=gnu11", "-Wall")
COMPILE_TIMEOUT_S = 180

HOW_TO_GET_COMPILER = (
    "install a C compiler, e.g. `sudo apt-get install gcc` (Debian/Ubuntu) or "
    "`sudo dnf install gcc` (RHEL/Fedora), or point $CC at one"
)
HOW_TO_GET_CUPTI = (
    "install the CUDA toolkit (CUPTI ships in it, under extras/CUPTI on older ones), or the "
    "CUPTI wheel into the Python that runs the agent (`pip install nvidia-cuda-cupti-cu12` for "
    "CUDA 12, `pip install 'nvidia-cuda-cupti==13.*'` for CUDA 13), or pass --cuda-home DIR / "
    "set CUDA_HOME"
)


class TracerBuildError(Exception):
    """A part the build needs is missing or the compiler failed; `missing` names the part."""

    def __init__(self, missing: str, message: str) -> None:
        super().__init__(message)
        self.missing = missing


@dataclass(frozen=True)
class CuptiLocation:
    """Where cupti.h (and the cuda.h it includes) and libcupti were found."""

    include_dirs: tuple[str, ...]
    library: str  # full path of libcupti.so or libcupti.so.N
    origin: str  # which rule found it: "--cuda-home", "CUDA_HOME", "/usr/local/cuda", "pip"


@dataclass(frozen=True)
class Compiler:
    path: str
    version: str  # first line of `cc --version`, part of the cache key


def _arch_targets() -> list[str]:
    machine = platform.machine()
    return {"x86_64": ["x86_64-linux"], "aarch64": ["sbsa-linux", "aarch64-linux"]}.get(
        machine, [f"{machine}-linux"]
    )


def _include_candidates(root: str) -> list[str]:
    dirs = [os.path.join(root, "include"), os.path.join(root, "extras", "CUPTI", "include")]
    dirs += [os.path.join(root, "targets", t, "include") for t in _arch_targets()]
    return dirs


def _lib_candidates(root: str) -> list[str]:
    dirs = [
        os.path.join(root, "lib64"),
        os.path.join(root, "lib"),
        os.path.join(root, "extras", "CUPTI", "lib64"),
    ]
    dirs += [os.path.join(root, "targets", t, "lib") for t in _arch_targets()]
    return dirs


def _find_library(lib_dirs: Iterable[str]) -> str | None:
    """libcupti.so if present (the toolkit's), else the highest libcupti.so.N (wheels ship only
    the versioned name; linking its full path records its SONAME, which is what the loader
    resolves at run time)."""
    for d in lib_dirs:
        plain = os.path.join(d, "libcupti.so")
        if os.path.isfile(plain):
            return plain
        versioned = [
            p for p in glob.glob(os.path.join(d, "libcupti.so.*")) if os.path.isfile(p)
        ]
        if versioned:
            # Shortest name first = the SONAME link (libcupti.so.13), not libcupti.so.2025.3.1.
            return sorted(versioned, key=lambda p: (len(p), p))[0]
    return None


def _first_with(dirs: Iterable[str], name: str) -> str | None:
    for d in dirs:
        if os.path.isfile(os.path.join(d, name)):
            return d
    return None


def _from_root(root: str, origin: str, extra_includes: Sequence[str] = ()) -> CuptiLocation | None:
    incs = _include_candidates(root)
    cupti_inc = _first_with(incs, "cupti.h")
    lib = _find_library(_lib_candidates(root))
    if cupti_inc is None or lib is None:
        return None
    cuda_inc = _first_with([cupti_inc, *incs, *extra_includes], "cuda.h")
    if cuda_inc is None:
        return None
    include_dirs = tuple(dict.fromkeys([cupti_inc, cuda_inc]))
    return CuptiLocation(include_dirs=include_dirs, library=lib, origin=origin)


def _site_packages() -> list[str]:
    dirs: list[str] = []
    for key in ("purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            dirs.append(p)
    dirs += [p for p in sys.path if p.endswith("site-packages") or p.endswith("dist-packages")]
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


def _pip_roots() -> list[str]:
    """NVIDIA wheel folders that may hold CUPTI: nvidia/cu13 (CUDA 13 wheels put every component
    under one folder) and nvidia/cuda_cupti (CUDA 12 wheels, one folder per component)."""
    roots: list[str] = []
    for sp in _site_packages():
        for name in ("cu13", "cu12", "cuda_cupti"):
            p = os.path.join(sp, "nvidia", name)
            if os.path.isdir(p):
                roots.append(p)
    return roots


def _pip_cuda_includes() -> list[str]:
    # CUDA 12 wheels keep cuda.h in nvidia/cuda_runtime/include, apart from CUPTI's headers.
    return [
        os.path.join(sp, "nvidia", comp, "include")
        for sp in _site_packages()
        for comp in ("cuda_runtime", "cuda_nvcc")
    ]


def candidate_roots(cuda_home: str | None) -> list[tuple[str, str]]:
    """(root, origin) in search order."""
    roots: list[tuple[str, str]] = []
    env = os.environ.get("CUDA_HOME")
    if cuda_home and cuda_home != env:
        roots.append((cuda_home, "--cuda-home"))
    if env:
        roots.append((env, "CUDA_HOME"))
    roots.append(("/usr/local/cuda", "/usr/local/cuda"))
    roots += [(r, "pip") for r in _pip_roots()]
    return roots


def find_cupti(cuda_home: str | None = None) -> CuptiLocation:
    """The first root holding cupti.h, cuda.h and libcupti, else TracerBuildError("CUPTI")."""
    tried: list[str] = []
    if cuda_home and not os.path.isdir(cuda_home):
        raise TracerBuildError("CUPTI", f"--cuda-home {cuda_home} is not a directory")
    extra = _pip_cuda_includes()
    for root, origin in candidate_roots(cuda_home):
        tried.append(root)
        if not os.path.isdir(root):
            continue
        loc = _from_root(root, origin, extra if origin == "pip" else ())
        if loc is not None:
            return loc
        if origin == "--cuda-home":
            # An explicit choice that lacks CUPTI is an error, not a reason to pick another CUDA.
            break
    raise TracerBuildError(
        "CUPTI",
        "no CUPTI found (cupti.h, cuda.h and libcupti.so) under: "
        + ", ".join(tried)
        + "; to get it: "
        + HOW_TO_GET_CUPTI,
    )


def find_compiler() -> Compiler:
    names = [os.environ["CC"]] if os.environ.get("CC") else []
    names += ["cc", "gcc", "clang"]
    for name in names:
        path = shutil.which(name)
        if not path:
            continue
        try:
            out = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0:
            first = (out.stdout.strip().splitlines() or [""])[0]
            return Compiler(path=path, version=first)
    raise TracerBuildError(
        "C compiler",
        "no C compiler found (looked for " + ", ".join(names) + "); to get one: "
        + HOW_TO_GET_COMPILER,
    )


def build_key(compiler: Compiler, cupti: CuptiLocation) -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        with open(os.path.join(TRACER_DIR, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    for part in (compiler.path, compiler.version, cupti.library, *cupti.include_dirs, *CFLAGS):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def build(
    out_dir: str, cuda_home: str | None = None
) -> tuple[str, bool, CuptiLocation, Compiler]:
    """Builds (or reuses) the library in out_dir. Returns (path, reused, cupti, compiler)."""
    compiler = find_compiler()
    cupti = find_cupti(cuda_home)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(os.path.abspath(out_dir), f"{LIBRARY_PREFIX}{build_key(compiler, cupti)}.so")
    if os.path.isfile(path):
        return path, True, cupti, compiler
    lib_dir = os.path.dirname(cupti.library)
    # Compile to a temporary name in the same folder and rename: two agents building at once
    # never see a half-written library.
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=os.path.dirname(path))
    os.close(fd)
    cmd = [
        compiler.path,
        *CFLAGS,
        *[f"-I{d}" for d in cupti.include_dirs],
        "-o",
        tmp,
        os.path.join(TRACER_DIR, "kvscope_cupti.c"),
        cupti.library,
        # The process that loads the library may not have CUPTI on its search path.
        f"-Wl,-rpath,{lib_dir}",
        "-lpthread",
    ]
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False
        )
        if proc.returncode != 0:
            raise TracerBuildError(
                "a successful compile",
                f"compiling the tracer failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                + (proc.stderr or proc.stdout).strip()[-4000:],
            )
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except subprocess.TimeoutExpired as e:
        raise TracerBuildError(
            "a successful compile", f"compiling the tracer took over {COMPILE_TIMEOUT_S} s"
        ) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path, False, cupti, compiler


def ensure_tracer(cuda_home: str | None, cache_dir: str) -> tuple[str | None, str]:
    """(library path or None, a human reason): what the agent's `run` calls before CUDA starts."""
    try:
        path, reused, cupti, compiler = build(cache_dir, cuda_home)
    except TracerBuildError as e:
        return None, str(e)
    except OSError as e:
        return None, f"building the tracer failed: {e}"
    how = "cached build" if reused else "built"
    return path, (
        f"{how} {path} with {compiler.path} ({compiler.version}) against CUPTI "
        f"{cupti.library} ({cupti.origin})"
    )


def build_selftest(out_dir: str) -> str:
    """Compiles record_selftest.c (no CUDA needed): the C writer of the trace format, for tests."""
    compiler = find_compiler()
    os.makedirs(out_dir, exist_ok=True)
    exe = os.path.join(out_dir, "record_selftest")
    cmd = [compiler.path, "-O2", "-std=gnu11", "-Wall", "-o", exe,
           os.path.join(TRACER_DIR, "record_selftest.c")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    if proc.returncode != 0:
        raise TracerBuildError("a successful compile", proc.stderr.strip()[-4000:])
    return exe


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m kvscope_agent build-tracer",
        description="Build the CUPTI transfer tracer for this host and print its path.",
    )
    parser.add_argument("--cuda-home", help="CUDA folder holding CUPTI (default: search)")
    parser.add_argument("--out", required=True, help="folder for the library (also its cache)")
    args = parser.parse_args(list(argv))
    try:
        path, reused, cupti, compiler = build(args.out, args.cuda_home)
    except TracerBuildError as e:
        print(f"build-tracer: missing {e.missing}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"build-tracer: {e}", file=sys.stderr)
        return 1
    print(
        f"build-tracer: {'reused' if reused else 'built'} with {compiler.version or compiler.path}; "
        f"CUPTI {cupti.library} ({cupti.origin})",
        file=sys.stderr,
    )
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
