"""Streaming product categorization: ONNX model + FAISS drift scores behind a Faust worker on Kafka.

Layout and contracts: docs/architecture.md. The worker: docs/worker.md.
"""

__version__ = "0.1.0"
