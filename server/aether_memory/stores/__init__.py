"""Adapters to the backing stores; the only place that knows Redis or MongoDB."""
