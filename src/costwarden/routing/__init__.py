"""Routing policy: fallback chains and circuit breakers (pure policy; I/O at the edges)."""
