"""Clients against stand-ins of TF Serving's documented REST and gRPC predict APIs."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf

from tests.tf_reid.export.conftest import encoded
from tf_reid.export import client

IMAGES = [encoded(20), encoded(21, 60, 30, "JPEG"), encoded(22)]


def test_rest_body_is_the_documented_columnar_b64_format():
    body = client.rest_body([b"\x89PNG..", b"\xff\xd8.."])
    assert body == {"signature_name": "serving_default",
                    "inputs": {"images": [{"b64": "iVBORy4u"}, {"b64": "/9guLg=="}]}}
    assert client.rest_url("http://h:8501/", "reid") == "http://h:8501/v1/models/reid:predict"
    assert client.rest_url("http://h:8501", "reid", 3) == (
        "http://h:8501/v1/models/reid/versions/3:predict")


def test_rest_replies_of_either_shape_and_errors():
    np.testing.assert_array_equal(client.rest_outputs({"outputs": [[1, 2]]}), [[1, 2]])
    np.testing.assert_array_equal(client.rest_outputs({"outputs": {"embeddings": [[3.0]]}}), [[3]])
    with pytest.raises(RuntimeError, match="Servable not found"):
        client.rest_outputs({"error": "Servable not found for request"})


def serve_rest(loaded, requests_seen):
    """A REST stand-in: decodes the documented body as TF Serving does, runs the signature."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            requests_seen.append((self.path, body))
            images = [base64.b64decode(item["b64"]) for item in body["inputs"]["images"]]
            out = loaded.signatures[body["signature_name"]](images=tf.constant(images))
            reply = json.dumps({"outputs": out["embeddings"].numpy().tolist()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_rest_and_grpc_and_in_process_agree(exported):  # noqa: F811
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    _, path, loaded = exported
    local = client.embed_in_batches(client.saved_model_embedder(path), IMAGES, batch_size=2,
                                    progress=False)
    direct = loaded.signatures["serving_default"](images=tf.constant(IMAGES))["embeddings"]
    np.testing.assert_allclose(local, direct.numpy(), atol=1e-6)

    seen = []
    server = serve_rest(loaded, seen)
    try:
        rest = client.embed_in_batches(client.rest_embedder(
            f"http://127.0.0.1:{server.server_port}", "reid", version=1), IMAGES, batch_size=2,
            progress=False)
    finally:
        server.shutdown()
    np.testing.assert_allclose(rest, local, atol=1e-6)
    assert [p for p, _ in seen] == ["/v1/models/reid/versions/1:predict"] * 2

    class Predictor(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            out = loaded.signatures[request.model_spec.signature_name or "serving_default"](
                **inputs)
            reply = predict_pb2.PredictResponse()
            reply.outputs["embeddings"].CopyFrom(tf.make_tensor_proto(out["embeddings"].numpy()))
            return reply

    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Predictor(), grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    try:
        remote = client.embed_in_batches(client.grpc_embedder(f"127.0.0.1:{port}", "reid"),
                                         IMAGES, batch_size=2, progress=False)
    finally:
        grpc_server.stop(None)
    np.testing.assert_allclose(remote, local, atol=1e-6)
