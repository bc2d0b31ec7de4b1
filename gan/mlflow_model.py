"""Compatibility path: model versions logged before the package layout name this module as their
MLflow pyfunc loader (`loader_module="gan.mlflow_model"`). New versions name
`gan.registry.model_format`; this module only forwards MLflow's hook so old versions still load.
"""

from gan.registry.model_format import _load_pyfunc

__all__ = ["_load_pyfunc"]
