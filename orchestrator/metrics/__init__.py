"""The metrics endpoint: Prometheus/OpenMetrics text at `/metrics`, a status page at `/`,
`status --json` at `/status.json`, served off the supervisor's loop from a snapshot it publishes."""

from orchestrator.metrics.endpoint import MetricsEndpoint

__all__ = ["MetricsEndpoint"]
