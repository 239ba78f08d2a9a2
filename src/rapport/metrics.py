"""Prometheus metrics, served at ``/metrics``."""

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "rapport_http_requests_total", "HTTP requests", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "rapport_http_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
INGESTED = Counter("rapport_ingest_messages_total", "Inbound messages", ["channel", "outcome"])
INGEST_BATCH = Histogram(
    "rapport_ingest_batch_size",
    "Messages per group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
JOBS = Counter("rapport_jobs_total", "Jobs run", ["name", "outcome"])
