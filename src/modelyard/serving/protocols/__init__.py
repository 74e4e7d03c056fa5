"""Wire protocols of the serving gateway: each decodes a request body into the canonical
``Inputs`` (validated against the model's signature) and encodes outputs into its response.

- :mod:`~modelyard.serving.protocols.oip`: Open Inference Protocol v2 (KServe, Triton).
- :mod:`~modelyard.serving.protocols.mlflow`: MLflow's ``/invocations`` scoring protocol.
"""

from modelyard.serving.protocols.mlflow import encode_predictions, parse_invocations
from modelyard.serving.protocols.oip import (
    InferRequest,
    encode_infer_response,
    model_metadata,
    numpy_dtype,
    oip_datatype,
    parse_infer_request,
)

__all__ = [
    "InferRequest",
    "encode_infer_response",
    "encode_predictions",
    "model_metadata",
    "numpy_dtype",
    "oip_datatype",
    "parse_infer_request",
    "parse_invocations",
]
