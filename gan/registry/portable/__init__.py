"""Code that travels inside every published model version (MLflow `code_paths`).

What this package is: `gan_generator_model.py`, a single standalone file that MLflow copies into
the model and imports as the pyfunc loader module, so a client with only torch and MLflow
installed can load a version. It imports torch and numpy (it reads safetensors itself), never
`gan`.

What it is not: the pipeline's networks (`gan.nets.models`; the copy here is pinned to them by
`tests/unit/test_portable_model.py`), nor the logging code (`gan.registry.model_format`).
"""
