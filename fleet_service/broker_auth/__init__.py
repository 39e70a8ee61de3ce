"""Authentication and topic authorization for external brokers that ask over HTTP (EMQX, VerneMQ, go-auth)."""
