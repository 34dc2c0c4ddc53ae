"""A real KServe ModelServer with gRPC on, serving a real scikit-learn model, for tests/test_grpc.py.

Run with the peer's own interpreter (``.venv-kserve``, which has kserve, scikit-learn
and joblib):

- ``python kserve_sklearn_grpc.py train PATH``: fit a tiny LogisticRegression on two
  well-separated clusters of 4-feature points and save it to PATH with joblib;
- ``python kserve_sklearn_grpc.py serve PATH HTTP_PORT GRPC_PORT``: serve it as model
  ``iris`` (V2 infer: FP32 ``[N, 4]`` in, INT64 ``predict`` out; a wrong shape is
  KServe's InvalidInput), beside model ``echo``, which answers every input as an
  output unchanged (for bit-exact round trips);
- ``python kserve_sklearn_grpc.py client GRPC_TARGET MODEL``: call MODEL through
  kserve's own InferenceGRPCClient with the FP32 rows read as JSON from stdin, and
  print the answer's outputs as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any


def train(path: str) -> None:
    import joblib
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    low = rng.normal(0.0, 0.3, size=(40, 4))
    high = rng.normal(5.0, 0.3, size=(40, 4))
    x = np.vstack([low, high]).astype(np.float32)
    y = np.array([0] * 40 + [1] * 40)
    joblib.dump(LogisticRegression().fit(x, y), path)


def serve(path: str, http_port: int, grpc_port: int) -> None:
    import joblib
    import numpy as np
    from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
    from kserve.errors import InvalidInput

    class SklearnModel(Model):  # type: ignore[misc]
        def __init__(self, name: str, model_path: str) -> None:
            super().__init__(name)
            self._model = joblib.load(model_path)
            self.ready = True

        async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
            assert isinstance(payload, InferRequest)
            rows = payload.inputs[0].as_numpy()
            if rows.ndim != 2 or rows.shape[1] != 4:
                raise InvalidInput(f"expected rows of 4 features, got shape {list(rows.shape)}")
            labels = self._model.predict(rows).astype(np.int64)
            out = InferOutput(name="predict", shape=list(labels.shape), datatype="INT64")
            out.set_data_from_numpy(labels, binary_data=False)
            return InferResponse(response_id=payload.id or "r", model_name=self.name, infer_outputs=[out])

    class Echo(Model):  # type: ignore[misc]
        def __init__(self, name: str) -> None:
            super().__init__(name)
            self.ready = True

        async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
            assert isinstance(payload, InferRequest)
            outputs = []
            for tensor in payload.inputs:
                out = InferOutput(name=tensor.name, shape=list(tensor.shape), datatype=tensor.datatype)
                out.set_data_from_numpy(tensor.as_numpy(), binary_data=False)
                outputs.append(out)
            return InferResponse(response_id=payload.id or "r", model_name=self.name, infer_outputs=outputs)

    ModelServer(http_port=http_port, grpc_port=grpc_port, workers=1, enable_grpc=True).start(
        [SklearnModel("iris", path), Echo("echo")]
    )


def client(target: str, model: str) -> None:
    import numpy as np
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    rows = np.array(json.loads(sys.stdin.read()), dtype=np.float32)

    async def main() -> None:
        grpc_client = InferenceGRPCClient(url=target, timeout=10, retries=0)
        tensor = InferInput(name="rows", shape=list(rows.shape), datatype="FP32")
        tensor.set_data_from_numpy(rows)
        answer = await grpc_client.infer(InferRequest(model_name=model, infer_inputs=[tensor], request_id="k1"))
        print(json.dumps({"model_name": answer.model_name, "id": answer.id, "outputs": [
            {"name": o.name, "datatype": o.datatype, "shape": list(o.shape), "data": o.as_numpy().tolist()}
            for o in answer.outputs]}))
        await grpc_client.close()

    asyncio.run(main())


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "train":
        train(sys.argv[2])
    elif command == "serve":
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        client(sys.argv[2], sys.argv[3])
