"""The composition root: the app factory, the server, logging."""
