"""The first lines of an application-side script (`gan.tools.pull_bench`, `gan.tools.load_bench`).

What this module is: `NO_PIPELINE_IMPORTS`, Python source that makes importing `gan` or `flows`
fail, so a client script run with `python -c` proves that a registered model loads with only
torch + mlflow installed. What it is not: the client scripts themselves (each tool keeps its
own loop).
"""

NO_PIPELINE_IMPORTS = r"""
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("gan", "flows"):
            raise ImportError(name + ": the pipeline is not installed here")

sys.meta_path.insert(0, Refuse())
"""
