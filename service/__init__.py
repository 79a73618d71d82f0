"""dopplergen generation service: FastAPI app, dynamic batcher and Prometheus metrics."""
