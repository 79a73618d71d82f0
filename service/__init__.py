"""dopplergen generation service: FastAPI app, step-level batching worker and Prometheus metrics."""
