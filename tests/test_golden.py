"""Golden values of the quickstart zoo: its run ids and the bytes of its first train shard.

A refactor that changes any of these changes what `zoo` publishes (as safetensors pins its
format in its tests). The ids are pure functions of the recipe. The shard's weights and metrics
depend on floating-point reduction order, which torch and MKL choose per CPU (AVX-512, AVX2…):
the shard is therefore trained in a subprocess with ATen's portable kernels
(``ATEN_CPU_CAPABILITY=default``) and MKL's conditional numerical reproducibility
(``MKL_CBWR=COMPATIBLE``), which give the same bits on every x86-64 CPU.

History: the digests were first taken with the code before the package moved into subpackages
(issue 12) and held after the move. Issue 13 took the checkpoint schedule out of the run id (so a
recipe that gains checkpoint epochs keeps its runs): the ids, and so the tensor names and the
run_config column, changed then; the weights and metrics, compared run by run, did not.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from zoo.naming import checkpoint_id, step_checkpoint_id
from zoo.recipe import expand_recipe, load_recipe
from zoo.stages.plan import plan

ROOT = Path(__file__).parent.parent
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"

RUN_IDS_SHA256 = "e4e64d7c89f9f6c8fe0bc0ae9e445bbc1ce932b3c08ff33d03543418100bfc05"
BATCH_IDS = ["b61f5317b65cdc12", "b4f331e859088000", "b005b6300ef266d0"]
SHARD_TENSORS_SHA256 = "bae3c7a61fdd3cd0715e3109d7604637372b05efcfe06ad538ac4d150c125c2e"
SHARD_METRICS_SHA256 = "1ad2cd7d1234a2d13b778d04ed130f525ab84458b95878b8ee8bbe88a3f88703"
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}


def shard_digests(out_dir: str) -> dict:
    """Train the quickstart's first population batch into ``out_dir``; digest its two shards:
    every tensor's name and bytes (sorted by name), and every metrics row."""
    import torch

    from zoo.stages.train import train_population, write_train_shards
    from zoo.store.shards import read_table_shard, read_tensor_shard

    torch.set_num_threads(1)
    batch = plan(load_recipe(QUICKSTART, [f"output.dir={out_dir}"])).batches[0]
    weights, metrics = write_train_shards(out_dir, batch, train_population(batch))
    tensors, _ = read_tensor_shard(out_dir, weights.path)
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].numpy().tobytes())
    rows = read_table_shard(out_dir, metrics.path).to_pylist()
    return {
        "batch_id": batch.batch_id,
        "tensors": len(tensors),
        "tensors_sha256": h.hexdigest(),
        "metrics_sha256": hashlib.sha256(repr(rows).encode()).hexdigest(),
    }


def test_quickstart_run_ids_are_pinned():
    runs = expand_recipe(load_recipe(QUICKSTART))
    assert len(runs) == 36
    assert (runs[0].run_id, runs[-1].run_id) == ("96ca2686d1f1f5be", "dbc9e691fb32c9bb")
    digest = hashlib.sha256("\n".join(r.run_id for r in runs).encode()).hexdigest()
    assert digest == RUN_IDS_SHA256
    assert [b.batch_id for b in plan(load_recipe(QUICKSTART)).batches] == BATCH_IDS
    assert checkpoint_id(runs[0].run_id, 5) == "96ca2686d1f1f5be-e0005"
    assert step_checkpoint_id(runs[0].run_id, 150) == "96ca2686d1f1f5be-s0000150"


def test_quickstart_first_shard_bytes_are_pinned(tmp_path):
    code = (
        "import json, sys, tests.test_golden as g; print(json.dumps(g.shard_digests(sys.argv[1])))"
    )
    env = {**os.environ, **PORTABLE_ENV}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    digests = json.loads(done.stdout.strip().splitlines()[-1])
    assert digests == {
        "batch_id": BATCH_IDS[0],
        "tensors": 12 * 6 * 6,  # 12 runs x 6 checkpoints x 6 parameter tensors
        "tensors_sha256": SHARD_TENSORS_SHA256,
        "metrics_sha256": SHARD_METRICS_SHA256,
    }
