"""The hot tier on Redis with the Search, JSON and Bloom modules."""
