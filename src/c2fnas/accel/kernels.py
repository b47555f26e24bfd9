"""Optional C++ kernels for the CPU, compiled on first use with PyTorch's extension loader.

``csrc/instance_norm.cpp`` holds a fused instance norm (+ ReLU) for channels_last_3d tensors.
It needs a C++ compiler with OpenMP and ninja (the ``ninja`` package is a dependency); the
first call compiles it (~30 s on 2 cores) into PyTorch's extension cache
(``~/.cache/torch_extensions``, or ``$TORCH_EXTENSIONS_DIR``), later processes load it from
there. Where it cannot be built, the network runs PyTorch's own ops instead (slower, same
results up to rounding) after one warning. ``C2FNAS_CPU_KERNELS=0`` skips it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sysconfig
import warnings
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

log = logging.getLogger(__name__)

SWITCH = "C2FNAS_CPU_KERNELS"
SOURCE = Path(__file__).with_name("csrc") / "instance_norm.cpp"


def _build_signature() -> str:
    """Machine, CPU features, torch version and source path. Compiled for this CPU
    (``-march=native``), the cache of a home directory shared by a cluster's nodes needs one
    build per kind of node; and PyTorch rebuilds an extension whose source path changed, so two
    checkouts sharing one cache would rebuild it each time the other one had used it."""
    features = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        lines = cpuinfo.read_text(errors="replace").splitlines()
        features = next((line for line in lines if line.startswith(("flags", "Features"))), "")
    text = f"{platform.machine()} {features} {torch.__version__} {SOURCE.resolve()}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _built(name: str) -> bool:
    """Whether PyTorch's extension cache seems to hold a build of ``name`` (only for the log)."""
    try:
        from torch.utils.cpp_extension import _get_build_directory  # as below

        return any(Path(_get_build_directory(name, verbose=False)).glob(f"{name}*.so"))
    except Exception:
        return False


@cache
def cpu_kernels() -> ModuleType | None:
    """The compiled kernels, or None where they are switched off or cannot be built."""
    if os.environ.get(SWITCH, "1") == "0":
        return None
    # only on the first call: PyTorch's extension loader takes about a second to import
    from torch.utils.cpp_extension import load

    flags = ["-O3", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    name = f"c2fnas_cpu_kernels_{_build_signature()}"
    if _built(name):
        log.debug("loading c2fnas's C++ CPU kernels")
    else:
        log.info("compiling c2fnas's C++ CPU kernels (once per machine, ~30 s)")
    path = os.environ.get("PATH", "")
    # ninja from the ``ninja`` wheel sits next to this Python, which may not be on PATH
    os.environ["PATH"] = os.pathsep.join(filter(None, [sysconfig.get_path("scripts"), path]))
    try:
        return load(
            name,
            [str(SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
        )
    except Exception as error:  # no compiler, no OpenMP, no ninja, a failed build
        warnings.warn(
            f"c2fnas could not build its C++ CPU kernels from {SOURCE} ({error}); CPU training "
            f"uses PyTorch's own ops, which are slower. Set {SWITCH}=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    finally:
        os.environ["PATH"] = path
