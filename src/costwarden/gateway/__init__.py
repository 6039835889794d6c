"""The request path: authenticate, validate, route, call upstream, relay, meter."""
