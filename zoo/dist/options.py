"""How a stage's batches run: :class:`ExecOptions` (workers, threads, device, cluster kind), and
the device a worker trains on. Nothing here changes run ids, batches or weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from zoo.errors import DistError

CLUSTERS = ("local", "slurm", "pbs")


@dataclass(frozen=True)
class ExecOptions:
    """How batches run; none of it changes run ids, batches or weights.

    ``cluster_settings`` is the recipe's ``execution.cluster`` section without ``kind``.
    """

    workers: int = 2
    threads_per_worker: int = 1
    device: str = "auto"
    chunk_size: int | None = None
    eval_batch_size: int = 1024
    scheduler: str | None = None  # address of an existing Dask scheduler
    cluster: str = "local"  # local | slurm | pbs
    cluster_settings: dict = field(default_factory=dict)
    gpus_per_worker: int = 0
    retries: int = 1
    dashboard: bool = False  # serve the Dask dashboard (needs bokeh)
    no_workers_warning_s: float = 30.0  # say so when no worker has connected for this long

    def __post_init__(self) -> None:
        if self.cluster not in CLUSTERS:
            raise DistError(f"cluster {self.cluster!r} is not one of {list(CLUSTERS)}")
        if self.scheduler and self.cluster != "local":
            raise DistError(
                f"--scheduler {self.scheduler} and --cluster {self.cluster} both say where "
                "workers come from; give one of them"
            )

    @classmethod
    def from_recipe(cls, execution: dict, **overrides) -> ExecOptions:
        """Options from a resolved ``execution`` section; ``None`` overrides are ignored."""
        keys = (
            "workers",
            "threads_per_worker",
            "device",
            "chunk_size",
            "eval_batch_size",
            "gpus_per_worker",
            "retries",
            "no_workers_warning_s",
        )
        values = {k: execution[k] for k in keys if k in execution}
        settings = dict(execution.get("cluster") or {})
        values["cluster"] = settings.pop("kind", "local")
        values["cluster_settings"] = settings
        values.update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("scheduler") and not overrides.get("cluster"):
            values["cluster"] = "local"  # an explicit scheduler wins over the recipe's cluster
        return cls(**values)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> ExecOptions:
        return cls(**d)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other names pass through."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def worker_device(device: str) -> str:
    """The device of this worker: with several GPUs visible, worker ``n`` (the number its name
    ends with, as LocalCluster and jobqueue name them) takes GPU ``n mod count``."""
    import torch

    device = resolve_device(device)
    count = torch.cuda.device_count() if device == "cuda" else 0
    if count <= 1:
        return device
    try:
        from distributed import get_worker

        match = re.search(r"(\d+)$", str(get_worker().name))
    except (ImportError, ValueError):  # not on a Dask worker
        match = None
    return f"cuda:{int(match[1]) % count if match else 0}"
