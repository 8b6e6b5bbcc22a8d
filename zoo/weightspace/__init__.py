"""Weight-space tools for the people who use zoos: ``augment`` (seeded transforms, exact
symmetries included, for ``datasets`` and DataLoaders), ``align`` (weight and activation
matching, loss barriers), ``nets`` (weight-space networks), ``learn`` (downstream baselines on a
built zoo) and ``generators`` (scoring generated weights against a zoo)."""
