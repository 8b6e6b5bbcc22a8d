"""Execution: where and how a stage's batches run (this process, a Dask LocalCluster, an
existing scheduler, SLURM/PBS), and the pipeline that runs the stages in order.

``options`` says how (workers, threads, device), ``clusters`` makes the workers, ``run`` runs one
stage's batches and records their receipts, ``pipeline`` runs train -> landscape -> build.
"""
