"""In the serving image: start tritonserver the way `kiln-trainer serve` does, load a python-backend
model that imports kiln's serving code, and check one real inference (numpy 2 would empty it)."""

import json
import tempfile
import urllib.request
from pathlib import Path

from kiln_trainer.serving.tritonserver import TritonProcess

MODEL = '''
import numpy as np
import triton_python_backend_utils as pb_utils
import kiln_trainer.serving.service  # noqa: F401 - the stub must reach kiln's code and its imports


class TritonPythonModel:
    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "X").as_numpy()
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("Y", (x * 2).astype(np.float32))]))
        return out
'''
CONFIG = '''
name: "probe"
backend: "python"
input [ { name: "X", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [ { name: "Y", data_type: TYPE_FP32, dims: [ -1 ] } ]
'''

repo = Path(tempfile.mkdtemp()) / "models"
(repo / "probe" / "1").mkdir(parents=True)
(repo / "probe" / "config.pbtxt").write_text(CONFIG)
(repo / "probe" / "1" / "model.py").write_text(MODEL)
with TritonProcess(str(repo), load_models=["probe"], ready_timeout_s=120) as t:
    body = json.dumps({"inputs": [{"name": "X", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]}]})
    req = urllib.request.Request(f"http://{t.http_url}/v2/models/probe/infer", data=body.encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        outputs = json.loads(resp.read())["outputs"]
    print("outputs", outputs)
    assert outputs[0]["data"] == [2.0, 4.0, 6.0], outputs
print("ok triton")
