"""Outputs of the pipeline: Prometheus metrics, the forecasts topic, the page's history."""
