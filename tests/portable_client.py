"""A model consumer with only torch and MLflow: run as a script in a fresh subprocess.

    python tests/portable_client.py <cases.json>

`cases.json` is a list of {"uri", "conditional", "latent_dim", "ref"}: `ref` an .npz holding z,
y (conditional), the images the pipeline's own G draws from them (x), and x_req, its images
for the request {"n": len(z), "seed": 7}. Importing `gan` or `flows` is refused by a meta-path
hook installed before anything else, and the repository is taken off sys.path, so the models
must load from what travels inside them. For each case: `mlflow.pyfunc.load_model(uri)` with a
request and with z (and y), and `mlflow.pytorch.load_model(uri)` called as G(z[, y]); every
output is compared with the reference. Prints one JSON line per case; exits 1 on any mismatch.

Not a test module (pytest does not collect it): `tests/unit/test_portable_model.py` and
`tests/integration/test_registry.py` run it.
"""

import importlib.abc
import sys


class RefusePipeline(importlib.abc.MetaPathFinder):
    """Any `import gan...` / `import flows...` fails, as in an environment without them."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201
        if name.split(".")[0] in ("gan", "flows"):
            raise ImportError(f"{name}: the pipeline is not installed here")
        return None


sys.meta_path.insert(0, RefusePipeline())
_REPO = __file__.rsplit("/tests/", 1)[0]
# Off the path: the checkout and folders in it, but not an installed site-packages (CI's
# virtualenv lives inside the checkout: .venv/lib/python3.11/site-packages).
sys.path[:] = [p for p in sys.path if p not in ("", ".", _REPO)
               and not (p.startswith(_REPO + "/") and "site-packages" not in p)]

import json  # noqa: E402
import os  # noqa: E402

import mlflow  # noqa: E402
import mlflow.pytorch  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def check(case: dict) -> dict:
    ref = np.load(case["ref"])
    z, x = ref["z"], ref["x"]
    y = ref["y"] if case["conditional"] else None
    model = mlflow.pyfunc.load_model(case["uri"])
    got_req = model.predict({"n": len(z), "seed": 7})
    got_z = model.predict({"z": z} if y is None else {"z": z, "y": y})
    G = mlflow.pytorch.load_model(case["uri"])
    with torch.inference_mode():
        args = (torch.from_numpy(z),) if y is None else (torch.from_numpy(z), torch.from_numpy(y))
        got_pt2 = G(*args).numpy()
    errs = {"pyfunc_request": float(np.abs(got_req - ref["x_req"]).max()),
            "pyfunc_z": float(np.abs(got_z - x).max()),
            "pytorch_pt2": float(np.abs(got_pt2 - x).max())}
    return {"uri": case["uri"], "shape": list(got_z.shape), "dtype": str(got_z.dtype),
            "pytorch_type": type(G).__name__, "max_abs_err": errs,
            "ok": all(e < 1e-4 for e in errs.values()) and got_z.dtype == np.float32}


def main() -> int:
    assert "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" not in os.environ
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    ok = True
    for case in cases:
        r = check(case)
        r["pipeline_imported"] = sorted(m for m in sys.modules if m.split(".")[0] in ("gan",
                                                                                    "flows"))
        ok = ok and r["ok"] and not r["pipeline_imported"]
        print(json.dumps(r), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
