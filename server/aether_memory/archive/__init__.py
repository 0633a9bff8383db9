"""The cold tier: MongoDB through a durable Redis outbox."""
