"""The MLflow registry: run logging, the published model format, aliases and the gate, loading.

The consumers' entry points are re-exported here: `from gan.registry import load_generator`.
"""

from gan.registry.load import load_discriminator, load_generator

__all__ = ["load_discriminator", "load_generator"]
