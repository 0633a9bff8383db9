"""Aether Memory: a gRPC memory service for AI agents on Redis, with in-process embeddings."""
