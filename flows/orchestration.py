"""The orchestration overhead of one retraining run, for `gan bench --json` (`orchestration_s`).

What this module is: `orchestration_overhead(settings)` runs the retrain flow once, in this
process, against the configured stack (smoke recipe by default, `force` so it always trains),
and splits its wall time into training compute (the epochs' own seconds, timed inside the Ray
workers), judge compute (`JudgeRef.seconds`: the data step's judge, trained or loaded, and its
check), evaluation compute (`Report.compute_s`: metrics, pictures) and the rest:
`orchestration_s` = flow wall time − training − judge − evaluation compute, i.e. Prefect,
data preparation and storage I/O, Ray (joining or starting it, worker start-up, process
group), checkpoints and MLflow registration.

What it is not: no timing of the training step itself (`gan.tools.bench`), no assertion on
the figure (tests never assert timings).
"""

from __future__ import annotations

import time
from typing import Any

from flows.params import new_run_id
from flows.prefect_setup import use_api
from gan.core.config import RetrainParams
from gan.core.records import TrainedRef
from gan.core.settings import Settings
from gan.io.storage import Storage
from gan.train.ray.worker import TRAINED_FILE


class OrchestrationError(RuntimeError):
    """The measured run did not complete; the message says how it ended."""


def orchestration_overhead(settings: Settings, *, preset: str = "smoke") -> dict[str, Any]:
    """Run the flow once (see the module docstring); its wall time and how it splits."""
    use_api(settings)  # before anything reads Prefect's settings
    from flows.retrain import retrain  # lazy: Prefect, torch, Ray, MLflow (after use_api)

    params = RetrainParams(preset=preset, force=True)
    params = params.model_copy(update={"run_id": new_run_id(params.model_name)})
    run_id = params.run_id
    assert run_id is not None
    t0 = time.perf_counter()
    state = retrain(params, return_state=True)
    wall = time.perf_counter() - t0
    if not state.is_completed():
        raise OrchestrationError(f"the measured run {run_id} ended {state.type.value}: "
                                 f"{state.message}")
    storage = Storage.from_settings(settings)
    trained = TrainedRef(**storage.get_json(settings.s3_uri("ray", run_id, TRAINED_FILE)))
    report = storage.get_json(settings.s3_uri("runs", run_id, "eval", "report.json"))
    train_s = sum(float(h.get("epoch_time_s", 0.0)) for h in trained.history)
    eval_s = float(report.get("compute_s", 0.0))
    judge_s = float((report.get("judge_ref") or {}).get("seconds", 0.0))
    return {"orchestration_s": round(wall - train_s - judge_s - eval_s, 2),
            "flow_wall_s": round(wall, 2), "train_compute_s": round(train_s, 2),
            "judge_compute_s": round(judge_s, 2), "eval_compute_s": round(eval_s, 2),
            "orchestration_preset": preset,
            "orchestration_run_id": run_id, "ray_address": settings.ray_address}
