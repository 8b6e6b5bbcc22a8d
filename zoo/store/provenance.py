"""Provenance: what produced a shard (issue 17): the ``zoo`` version (and git commit), Python,
torch, numpy and CUDA versions, the device, the thread count and the determinism settings.

Every shard records it (safetensors ``__metadata__["provenance"]`` as JSON, the Parquet ``zoo``
metadata's ``provenance``) and so does its manifest record. Weights are bitwise reproducible
only within one environment (the same versions, device, CPU kernels and thread count: float
sums are ordered by them), so the card summarizes the environments of each config and
``zoo verify`` warns where one config mixes several.
"""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

from zoo import __version__
from zoo.naming import short_hash


@dataclass(frozen=True)
class Provenance:
    """The environment that wrote a shard.

    Attributes:
        zoo_version, git_commit: ``zoo.__version__``; the commit of the checkout ``zoo`` was
            imported from (``+dirty`` with uncommitted changes; ``""`` when not a checkout).
        python, torch, numpy, cuda: versions (``cuda``: ``torch.version.cuda``, ``""`` for a
            CPU-only torch).
        platform: operating system and machine (``Linux x86_64``).
        device: what computed the shard: ``cpu: <CPU model>`` or ``cuda: <GPU name>``.
        cpu_capability: the CPU kernels torch dispatched to (``AVX512``, ``AVX2``, ``default``).
        threads: ``torch.get_num_threads()`` of the process.
        deterministic: ``torch.are_deterministic_algorithms_enabled()``.
        cudnn_deterministic, cudnn_benchmark, allow_tf32: the cuDNN and TF32 switches.
    """

    zoo_version: str = ""
    git_commit: str = ""
    python: str = ""
    torch: str = ""
    numpy: str = ""
    cuda: str = ""
    platform: str = ""
    device: str = ""
    cpu_capability: str = ""
    threads: int = 0
    deterministic: bool = False
    cudnn_deterministic: bool = False
    cudnn_benchmark: bool = False
    allow_tf32: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Provenance:
        """Inverse of :meth:`to_dict`; unknown keys are ignored, missing ones default (records
        of older and newer writers stay readable)."""
        known = {f.name: f.type for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def environment(self) -> str:
        """A short hash of everything here: shards with the same one were computed alike."""
        return short_hash(self.to_dict(), n=8)

    def describe(self) -> str:
        """One line for people: versions, device, threads, determinism."""
        commit = f" ({self.git_commit[:12]})" if self.git_commit else ""
        cuda = f", CUDA {self.cuda}" if self.cuda else ""
        switches = [
            name
            for name, on in (
                ("deterministic", self.deterministic),
                ("cudnn.deterministic", self.cudnn_deterministic),
                ("cudnn.benchmark", self.cudnn_benchmark),
                ("tf32", self.allow_tf32),
            )
            if on
        ]
        return (
            f"zoo {self.zoo_version}{commit}, Python {self.python}, torch {self.torch}{cuda}, "
            f"numpy {self.numpy}, {self.platform}, {self.device} ({self.cpu_capability}), "
            f"{self.threads} thread(s), {', '.join(switches) or 'default determinism settings'}"
        )


def current_provenance(device: str | None = None) -> Provenance:
    """The environment of this process, computing on ``device`` (``None``: the current CUDA
    device where this process has initialized CUDA, else the CPU)."""
    import numpy
    import torch

    return Provenance(
        zoo_version=__version__,
        git_commit=git_commit(),
        python=platform.python_version(),
        torch=torch.__version__,
        numpy=numpy.__version__,
        cuda=torch.version.cuda or "",
        platform=f"{platform.system()} {platform.machine()}",
        device=device_name(device),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        threads=torch.get_num_threads(),
        deterministic=torch.are_deterministic_algorithms_enabled(),
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
    )


def device_name(device: str | None = None) -> str:
    """``cuda: <GPU name>`` or ``cpu: <CPU model>`` (``mps`` and others by their type)."""
    import torch

    if device is None:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        device = f"cuda:{torch.cuda.current_device()}" if cuda else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    if dev.type == "cpu":
        return f"cpu: {cpu_model()}"
    return dev.type


@cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def git_commit() -> str:
    """The commit of the git checkout ``zoo`` is imported from, ``+dirty`` with uncommitted
    changes to tracked files; ``""`` for an installed wheel (or without git)."""
    root = Path(__file__).resolve().parent.parent.parent
    if not (root / ".git").exists():
        return ""
    try:
        head = _git(root, "rev-parse", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + ("+dirty" if dirty else "")


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
    )
    return done.stdout.strip()


def differing_fields(provenances) -> list[str]:
    """The fields in which some of ``provenances`` differ (``["threads", "torch"]``)."""
    dicts = [p.to_dict() for p in provenances]
    return [f.name for f in fields(Provenance) if len({str(d[f.name]) for d in dicts}) > 1]


def provenance_json(provenance: Provenance) -> str:
    """The JSON a shard's metadata holds (keys sorted: the same environment, the same bytes)."""
    return json.dumps(provenance.to_dict(), sort_keys=True)


def read_provenance(metadata: dict) -> Provenance | None:
    """A shard's provenance from its metadata (``None`` for shards written before issue 17)."""
    value = metadata.get("provenance")
    if isinstance(value, str):
        value = json.loads(value)
    return Provenance.from_dict(value) if value else None
