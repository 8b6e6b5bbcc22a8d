"""The store: an output folder of shards and their manifest, local or remote.

``fs`` reads and writes files of a local folder or an fsspec URL atomically, ``manifest`` is the
record of what is done (one receipt per shard, with its sha256), ``shards`` writes and reads
safetensors and Parquet shards, and ``dataset`` finds a built dataset folder and its layouts.
"""
