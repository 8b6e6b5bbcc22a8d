"""The Hugging Face Hub: ``client`` (the HfApi factory, token, retries, errors), ``push``
(publish a built zoo, sending only what changed) and ``load`` (``zoo.load``, ``iter_weights``,
``zoo pull``)."""
