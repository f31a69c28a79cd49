"""HTTP API (FastAPI). Never imports TensorFlow: inference runs on ONNX Runtime."""
