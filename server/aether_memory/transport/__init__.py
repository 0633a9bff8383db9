"""The gRPC edge: proto in, one use-case call, proto out, errors mapped to statuses."""
