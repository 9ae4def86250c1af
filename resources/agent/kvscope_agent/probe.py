"""Host probe: one JSON object on stdout describing what a GPU host can run.

Standard library only, and runnable on a host that has no agent yet: the app sends this file as
the program of `python3 -` (stdin), so the whole probe is one SSH round trip. `argv[1]`, when given,
is the folder whose free space matters (where runs and the agent go); it need not exist yet.
Every part is best-effort: a missing nvidia-smi or torch becomes a null plus a note, never a crash.
"""

from __future__ import annotations

import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# The probe's nvidia-smi query, also telemetry.PROBE_FIELDS (recorded on an H100 in
# tests/fixtures/nvidia-smi/h100-query-gpu-probe-fields.csv); free memory is asked separately.
SMI_FIELDS = (
    "index",
    "name",
    "uuid",
    "memory.total",
    "pcie.link.gen.max",
    "pcie.link.width.max",
    "driver_version",
    "pci.bus_id",
)

# An engine import can take tens of seconds (vllm initialises a lot); each runs in its own
# process, all at once, bounded so one broken install cannot hang the probe.
ENGINE_IMPORT_TIMEOUT_S = 60.0


def _run(argv: list[str], timeout: float = 20.0) -> tuple[int, str, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not found"
    except subprocess.TimeoutExpired:
        return 124, "", f"{argv[0]}: no answer in {timeout:.0f} s"
    except OSError as e:
        return 126, "", f"{argv[0]}: {e}"


def _num(v: str) -> float | None:
    v = v.strip()
    try:
        return float(v)
    except ValueError:
        return None  # "[N/A]", "[Not Supported]"


def probe_gpus(notes: list[str]) -> tuple[list[dict[str, Any]], str | None, str | None]:
    if shutil.which("nvidia-smi") is None:
        notes.append("nvidia-smi not found: no NVIDIA driver on this host (or not on PATH)")
        return [], None, None
    rc, out, err = _run(["nvidia-smi", "--query-gpu=" + ",".join(SMI_FIELDS), "--format=csv,noheader,nounits"])
    if rc != 0:
        notes.append(f"nvidia-smi failed ({rc}): {err.strip()[:300]}")
        return [], None, None
    gpus: list[dict[str, Any]] = []
    driver = None
    for line in out.strip().splitlines():
        cols = [c.strip() for c in line.split(",")]
        if len(cols) != len(SMI_FIELDS):
            continue
        row = dict(zip(SMI_FIELDS, cols))
        total = _num(row["memory.total"])
        gen = _num(row["pcie.link.gen.max"])
        width = _num(row["pcie.link.width.max"])
        driver = row["driver_version"] or driver
        gpus.append(
            {
                "index": int(row["index"]),
                "name": row["name"],
                "uuid": row["uuid"] or None,
                # nounits: memory is MiB.
                "memory_total_bytes": int(total * 1024 * 1024) if total is not None else None,
                "memory_free_bytes": None,
                "pcie_gen": int(gen) if gen is not None else None,
                "pcie_width": int(width) if width is not None else None,
                "c2c": None,
            }
        )
    rc, out, _ = _run(["nvidia-smi", "--query-gpu=index,memory.free", "--format=csv,noheader,nounits"])
    if rc == 0:
        for line in out.strip().splitlines():
            idx, _, free = (c.strip() for c in line.partition(","))
            mib = _num(free)
            for g in gpus:
                if str(g["index"]) == idx and mib is not None:
                    g["memory_free_bytes"] = int(mib * 1024 * 1024)
    # c2c.mode is newer; an older nvidia-smi rejects the whole query when asked for it.
    rc, out, _ = _run(["nvidia-smi", "--query-gpu=index,c2c.mode", "--format=csv,noheader,nounits"])
    if rc == 0:
        for line in out.strip().splitlines():
            idx, _, mode = (c.strip() for c in line.partition(","))
            for g in gpus:
                if str(g["index"]) == idx:
                    g["c2c"] = True if mode.lower() == "enabled" else False if mode.lower() == "disabled" else None
    cuda = None
    rc, out, _ = _run(["nvidia-smi"])
    if rc == 0:
        marker = "CUDA Version:"
        at = out.find(marker)
        if at >= 0:
            cuda = out[at + len(marker) :].split()[0].strip("|") or None
    return gpus, driver, cuda


def probe_torch(notes: list[str]) -> dict[str, Any] | None:
    try:
        import torch  # noqa: PLC0415 (optional, slow import)
    except Exception as e:  # ImportError, or a broken install raising anything
        notes.append(f"torch does not import: {type(e).__name__}: {e}"[:400])
        return None
    try:
        avail = bool(torch.cuda.is_available())
    except Exception:
        avail = False
    return {"version": str(torch.__version__), "cuda": getattr(torch.version, "cuda", None), "cuda_available": avail}


# Interpreters that import torch, for a host whose probed Python lacks it (a venv or conda env the
# login shell does not activate): where they are looked for, how many at most, and how long each
# may take to import torch (all at once, so the whole search ends within about that time).
TORCH_PYTHON_GLOBS = (
    "~/.venv*/bin/python3",
    "~/venv*/bin/python3",
    "~/miniconda3/envs/*/bin/python3",
    "~/anaconda3/envs/*/bin/python3",
    "/opt/conda/envs/*/bin/python3",
    "/opt/conda/bin/python3",
    "~/miniconda3/bin/python3",
    "~/anaconda3/bin/python3",
    "~/miniforge3/envs/*/bin/python3",
    "~/miniforge3/bin/python3",
    "~/.pyenv/versions/*/bin/python3",
    # A venv an image or an admin set up for everyone: the lent GPU machines' torch lives in
    # /opt/torch/.venv, on no non-login PATH (bench/results/h100-2026-12-06/ssh-path).
    "/opt/*/.venv/bin/python3",
    "/opt/*/venv/bin/python3",
)
LOGIN_PATH_TIMEOUT_S = 10.0
TORCH_PYTHON_MAX = 24
TORCH_IMPORT_TIMEOUT_S = 45.0
_TORCH_CHECK = (
    "import json, platform, sys\n"
    "import torch\n"
    "try:\n    cuda = bool(torch.cuda.is_available())\nexcept Exception:\n    cuda = False\n"
    "print(json.dumps({'executable': sys.executable, 'version': platform.python_version(),"
    " 'torch': str(torch.__version__), 'cuda_available': cuda}))\n"
)


def login_shell_path() -> str:
    """The PATH a login shell of this user sets ("" when it cannot be read in time)."""
    shell = os.environ.get("SHELL") or "/bin/sh"
    rc, out, _ = _run([shell, "-lc", 'printf "\\n%s" "$PATH"'], timeout=LOGIN_PATH_TIMEOUT_S)
    # The last line only: a profile may print a banner first.
    return out.rsplit("\n", 1)[-1].strip() if rc == 0 else ""


def python_candidates() -> list[str]:
    """python3 executables on the PATH and in the usual venv / conda / pyenv places, one per file."""
    found: list[str] = []
    # This (non-login) shell's PATH, then the login shell's: a profile script that puts a venv or
    # a module's Python on the PATH runs only for login shells, which SSH commands are not.
    for path_var in (os.environ.get("PATH", ""), login_shell_path()):
        for d in path_var.split(os.pathsep):
            if d:
                found.append(os.path.join(d, "python3"))
    for pattern in TORCH_PYTHON_GLOBS:
        found.extend(sorted(glob.glob(os.path.expanduser(pattern))))
    out: list[str] = []
    seen: set[str] = set()
    for path in found:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        # One entry per place: /usr/bin/python3 and /bin/python3 (merged /usr) are one. Not the
        # file's own target: a venv's python3 links to the base interpreter yet imports otherwise.
        key = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        if key in seen:
            continue
        seen.add(key)
        out.append(path)
    return out[:TORCH_PYTHON_MAX]


def _torch_python(path: str) -> dict[str, Any] | None:
    rc, out, _ = _run([path, "-c", _TORCH_CHECK], timeout=TORCH_IMPORT_TIMEOUT_S)
    if rc != 0:
        return None
    try:
        info = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    # The path the user would type (a venv's bin/python3), not the interpreter it resolves to.
    info["executable"] = path
    return info


def probe_torch_pythons() -> list[dict[str, Any]]:
    """Every candidate interpreter that imports torch (each in its own process, all at once):
    path, Python and torch versions, whether CUDA is available."""
    candidates = python_candidates()
    if not candidates:
        return []
    with ThreadPoolExecutor(max_workers=len(candidates)) as pool:
        return [r for r in pool.map(_torch_python, candidates) if r is not None]


def _dist_version(name: str) -> str | None:
    try:
        from importlib import metadata

        return metadata.version(name)
    except Exception:
        return None


def probe_engine(module: str, dist: str) -> dict[str, Any]:
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except Exception:
        found = False
    if not found:
        return {"name": module, "available": False, "version": None, "reason": f"{module} is not installed for {sys.executable}"}
    code = f"import {module} as m; print(getattr(m, '__version__', ''))"
    rc, out, err = _run([sys.executable, "-c", code], timeout=ENGINE_IMPORT_TIMEOUT_S)
    if rc != 0:
        last = (err.strip().splitlines() or ["(no message)"])[-1]
        return {"name": module, "available": False, "version": _dist_version(dist), "reason": f"import {module} failed: {last}"[:400]}
    return {"name": module, "available": True, "version": out.strip() or _dist_version(dist), "reason": None}


def probe_memory() -> tuple[int | None, int | None]:
    total = avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                kb = int(v.split()[0]) * 1024
                if k == "MemTotal":
                    total = kb
                elif k == "MemAvailable":
                    avail = kb
    except (OSError, ValueError, IndexError):
        pass
    return total, avail


def disk_free(path: str) -> int | None:
    p = os.path.expanduser(path)
    while p and not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    try:
        st = os.statvfs(p or "/")
        return st.f_bavail * st.f_frsize
    except OSError:
        return None


def probe(target_dir: str) -> dict[str, Any]:
    t0 = time.monotonic()
    notes: list[str] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        engines_f = [pool.submit(probe_engine, m, d) for m, d in (("tensorrt_llm", "tensorrt-llm"), ("vllm", "vllm"))]
        gpus_f = pool.submit(probe_gpus, notes)
        torch_pythons_f = pool.submit(probe_torch_pythons)
        torch_info = probe_torch(notes)
        gpus, driver, cuda = gpus_f.result()
        engines = [f.result() for f in engines_f]
        torch_pythons = torch_pythons_f.result()
    torch_engine = {
        "name": "torch",
        "available": torch_info is not None,
        "version": torch_info["version"] if torch_info else None,
        "reason": None if torch_info else "the built-in engine needs PyTorch",
    }
    ram_total, ram_avail = probe_memory()
    return {
        "hostname": platform.node() or None,
        "os": f"{platform.system()} {platform.release()}".strip() or None,
        "python": {"executable": sys.executable, "version": platform.python_version()},
        "torch": torch_info,
        "torch_pythons": torch_pythons,
        "engines": [torch_engine, *engines],
        "gpus": gpus,
        "driver_version": driver,
        "cuda_version": cuda,
        "disk_free_bytes": disk_free(target_dir),
        "ram_total_bytes": ram_total,
        "ram_available_bytes": ram_avail,
        "notes": notes,
        "elapsed_ms": int((time.monotonic() - t0) * 1000),
    }


def main(argv: list[str]) -> int:
    target = argv[1] if len(argv) > 1 else "~/.cache/kvscope"
    json.dump(probe(target), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
