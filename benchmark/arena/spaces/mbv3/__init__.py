"""``mbv3-cifar``: architecture encoding, elastic layers, networks and the search space."""
