"""Live events: the in-process bus and its fan-out between replicas."""
