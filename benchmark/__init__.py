"""mpqbench: a fair benchmark of mixed-precision quantization search methods."""

__version__ = "0.1.0"
