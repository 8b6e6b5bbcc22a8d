"""Networks: architectures with their layouts and permutation specs, the population forward
that runs many models at once, initializations, and population optimizers."""
