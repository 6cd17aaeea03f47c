"""In the serving image: every import of the Triton model file (kiln_trainer/serving/model.py).

The python backend stub imports that file inside tritonserver; `triton_python_backend_utils`
exists only there, so it is the one import left out. numpy must stay < 2 for the stub.
"""

import ast
import importlib
import importlib.util

import numpy

origin = importlib.util.find_spec("kiln_trainer.serving.model").origin
tree = ast.parse(open(origin).read())
names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
for name in sorted(names - {"triton_python_backend_utils", "__future__"}):
    importlib.import_module(name)
    print(f"ok {name}")
major = int(numpy.__version__.split(".")[0])
assert major < 2, f"numpy {numpy.__version__}: the python backend stub needs numpy < 2"
print(f"ok numpy {numpy.__version__}")
