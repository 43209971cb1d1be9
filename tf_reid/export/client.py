"""Getting embeddings from an exported model: TF Serving over REST or gRPC, or in-process.

REST follows TF Serving's documented predict API: POST
`<base>/v1/models/<name>[/versions/<v>]:predict` with the columnar body
`{"signature_name": ..., "inputs": {"images": [{"b64": "<base64>"}, ...]}}`; binary inputs go as
`{"b64": ...}` objects. The reply is `{"outputs": <value>}` when the signature has one output, or
`{"outputs": {"<name>": <value>, ...}}` otherwise. gRPC uses tensorflow-serving-api's
PredictionService with the same PredictRequest the warm-up file holds.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from tf_reid.export.saved_model import IMAGES_INPUT, predict_request

Embedder = Callable[[Sequence[bytes]], np.ndarray]


def rest_body(images: Sequence[bytes], signature_name: str = "serving_default") -> dict[str, Any]:
    """The JSON body of a REST predict call carrying encoded images (columnar format)."""
    return {"signature_name": signature_name,
            "inputs": {IMAGES_INPUT: [{"b64": base64.b64encode(b).decode("ascii")}
                                      for b in images]}}


def rest_url(base: str, model_name: str, version: int | None = None) -> str:
    path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version is not None else "")
    return base.rstrip("/") + path + ":predict"


def rest_outputs(reply: dict[str, Any], name: str = "embeddings") -> np.ndarray:
    """The named output of a REST predict reply, as float32 (either reply shape)."""
    if "error" in reply:
        raise RuntimeError(f"TF Serving: {reply['error']}")
    outputs = reply["outputs"]
    if isinstance(outputs, dict):
        outputs = outputs[name]
    return np.asarray(outputs, dtype=np.float32)


def rest_embedder(base: str, model_name: str, version: int | None = None,
                  timeout: float = 60.0) -> Embedder:
    """Embeds through a TF Serving REST endpoint (e.g. http://localhost:8501)."""
    url = rest_url(base, model_name, version)

    def embed(images: Sequence[bytes]) -> np.ndarray:
        request = urllib.request.Request(url, data=json.dumps(rest_body(images)).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return rest_outputs(json.loads(response.read()))

    return embed


def grpc_embedder(target: str, model_name: str, timeout: float = 60.0) -> Embedder:
    """Embeds through a TF Serving gRPC endpoint (e.g. localhost:8500)."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))

    def embed(images: Sequence[bytes]) -> np.ndarray:
        reply = stub.Predict(predict_request(images, model_name), timeout)
        return tf.make_ndarray(reply.outputs["embeddings"]).astype(np.float32)

    return embed


def saved_model_embedder(path: str) -> Embedder:
    """Runs the SavedModel's serving_default in this process (no server)."""
    serve = tf.saved_model.load(path).signatures["serving_default"]

    def embed(images: Sequence[bytes]) -> np.ndarray:
        return serve(**{IMAGES_INPUT: tf.constant(list(images), tf.string)})["embeddings"].numpy()

    return embed


def embed_in_batches(embed: Embedder, images: Sequence[bytes], batch_size: int = 32,
                     progress: bool = True) -> np.ndarray:
    """[N, D] embeddings of `images`, `batch_size` per call, with a progress bar."""
    from tqdm import tqdm

    parts = []
    with tqdm(total=len(images), unit="img", desc="embed", disable=None if progress else True,
              leave=False) as bar:
        for start in range(0, len(images), batch_size):
            parts.append(embed(images[start:start + batch_size]))
            bar.update(len(parts[-1]))
    if not parts:
        raise ValueError("no images to embed")
    return np.concatenate(parts)
