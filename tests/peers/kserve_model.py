"""A real KServe ModelServer (the ``kserve`` package) with one model, for interoperability tests.

Run with the peer's own interpreter: ``python kserve_model.py HTTP_PORT``. The model
doubles numbers: V1 ``{"instances": [...]}`` -> ``{"predictions": [...]}``, and V2 infer
``inputs[0].data`` -> an output named ``doubled``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer


class Doubler(Model):  # type: ignore[misc]
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.ready = True

    async def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
        if isinstance(payload, InferRequest):
            data = payload.inputs[0].data
            out = InferOutput(name="doubled", shape=[len(data)], datatype="INT64", data=[x * 2 for x in data])
            return InferResponse(response_id=payload.id or "r", model_name=self.name, infer_outputs=[out])
        if isinstance(payload, bytes | str):
            payload = json.loads(payload)
        return {"predictions": [x * 2 for x in payload["instances"]]}


if __name__ == "__main__":
    port = int(sys.argv[1])
    ModelServer(http_port=port, grpc_port=port + 1, workers=1, enable_grpc=False).start([Doubler("doubler")])
