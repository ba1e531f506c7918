"""Where a run trains and what it was built from: the device (`resolve_device`, `device_name`), the git commit of a
work tree (`git_commit`), and a run's provenance for its spec.json (`provenance`)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

#: this checkout: the work tree whose commit a run records
REPO = Path(__file__).resolve().parents[1]


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available here; use device: auto or cpu")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def cpu_model() -> dict[str, str]:
    """The CPU's model name and the widest vector instruction set it has (float results of the same run differ
    between CPU models, so a run records which one it trained on): ``{"model": ..., "isa": ...}``."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and value.strip():
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = set(value.split())
                if model and flags and key.strip() == "":  # the first processor's block is enough
                    break
    except OSError:
        pass
    isa = next((name for name in ("avx512f", "avx2", "avx", "sse4_2", "asimd", "neon") if name in flags),
               platform.machine())
    return {"model": model, "isa": isa, "machine": platform.machine()}


def git(folder: str | Path, *args: str) -> str | None:
    """The output of ``git args`` in the work tree at `folder` (stripped), or None when git fails or is missing."""
    try:
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def git_commit(folder: str | Path = REPO) -> str:
    """The commit of the git work tree at `folder`, or 'unknown'."""
    return git(folder, "rev-parse", "HEAD") or "unknown"


def provenance(device: torch.device) -> dict[str, Any]:
    """Git commit (and dirtiness), package versions, device and command line, for spec.json."""
    status = git(REPO, "status", "--porcelain", "--untracked-files=no")
    return {"git_commit": git(REPO, "rev-parse", "HEAD"), "git_dirty": bool(status) if status is not None else None,
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "device_name": device_name(device), "command": " ".join(sys.argv),
            "hostname": platform.node(), "cpu": cpu_model()}
