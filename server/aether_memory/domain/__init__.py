"""Memory semantics as plain values and functions: no gRPC, Redis or MongoDB types here."""
