"""kserve's own v2 clients, unchanged, against the gateway; run by test_oip.py in a process of
its own (kserve and tritonclient.grpc both register the `inference` protobuf package, so one
process cannot import both). Prints one JSON object: per client, the health answers, the
scores and the interaction ids of one infer.

    python3 tests/python/kserve_client.py HTTP_URL GRPC_ADDR MODEL ROWS_JSON
"""
import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest
from kserve.inference_client import RESTConfig


def request(model, x, request_id, binary):
    inp = InferInput("features", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    return InferRequest(model, [inp], request_id=request_id)


def summary(answer, health):
    ids = answer.parameters["interaction_ids"]
    ids = ids.string_param if hasattr(ids, "string_param") else ids
    return {"health": health, "model_name": answer.model_name, "id": answer.id,
            "scores": [float(v) for v in answer.outputs[0].as_numpy()], "interaction_ids": ids.split(",")}


async def main(url, grpc_addr, model, x):
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    try:
        health = [await rest.is_server_live(url), await rest.is_server_ready(url),
                  await rest.is_model_ready(url, model)]
        by_rest = summary(await rest.infer(url, request(model, x, "kserve-rest", False), model_name=model), health)
    finally:
        await rest.close()
    client = InferenceGRPCClient(grpc_addr, retries=0)
    try:
        health = [await client.is_server_live(), await client.is_server_ready(), await client.is_model_ready(model)]
        by_grpc = summary(await client.infer(request(model, x, "kserve-grpc", True)), health)
    finally:
        await client.close()
    return {"rest": by_rest, "grpc": by_grpc}


if __name__ == "__main__":
    url, grpc_addr, model, rows = sys.argv[1:5]
    x = np.array([[np.nan if v is None else v for v in r] for r in json.loads(rows)], dtype=np.float32)
    print(json.dumps(asyncio.run(main(url, grpc_addr, model, x))))
