"""The data-change trigger on the real stack (issue 15, point 8): `watch-source` run in this
process against an .npz source in the bucket starts nothing on its first look (a baseline) or
while the object is unchanged, and starts one run of the retrain deployment once new data is
uploaded, and one more each time the data changes again, also back to an earlier state. The
retrain deployment is registered but not served here, so the started runs stay Scheduled: the
test checks their parameters, then deletes them (no training in this test).
"""

from __future__ import annotations

import io
import uuid

import numpy as np
import pytest

from gan.core.config import RetrainParams
from gan.core.settings import Settings
from gan.io.storage import Storage

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NAME = f"trig-{uuid.uuid4().hex[:6]}"


def _npz(n: int) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.full((n, 8, 8), 7, np.uint8))
    return buf.getvalue()


def test_new_data_in_the_source_starts_a_retrain_run(stack: Settings) -> None:
    from flows.prefect_setup import use_api

    use_api(stack)
    from prefect.client.orchestration import get_client  # after use_api (reads the API URL)
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from flows.retrain import retrain
    from flows.trigger import watch_source

    storage, uri = Storage.from_settings(stack), stack.s3_uri("raw", NAME, "data.npz")
    storage.put_bytes(uri, _npz(30))
    dep_id = retrain.to_deployment(name=NAME).apply()  # registered, not served
    params = RetrainParams(preset="smoke", data={"source": "npz", "uri": uri})
    deployment = f"retrain/{NAME}"

    def runs() -> list:
        with get_client(sync_client=True) as c:
            return c.read_flow_runs(deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[dep_id])))

    assert watch_source(params, deployment) is None and runs() == []  # first look: baseline
    assert watch_source(params, deployment) is None and runs() == []  # unchanged
    storage.put_bytes(uri, _npz(40))  # new data in the source
    started = watch_source(params, deployment)
    found = runs()
    assert started is not None and [str(r.id) for r in found] == [started]
    assert found[0].parameters["params"]["data"]["uri"] == uri
    assert watch_source(params, deployment) is None and len(runs()) == 1  # seen: once only
    # The old data back, then the new again (A → B → A → B): each change starts a run
    # (issue 23, item 7: the second B used to get the first B's key and start nothing).
    storage.put_bytes(uri, _npz(30))
    back = watch_source(params, deployment)
    storage.put_bytes(uri, _npz(40))
    again = watch_source(params, deployment)
    found = runs()
    assert len({started, back, again}) == 3 and {str(r.id) for r in found} == {
        started, back, again}
    with get_client(sync_client=True) as c:
        for r in found:
            c.delete_flow_run(r.id)
