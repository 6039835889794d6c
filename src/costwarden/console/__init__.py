"""The dashboard's web pages at ``/dashboard``: server-rendered (Jinja2), htmx for partial
updates and forms, Chart.js for charts, every asset served from the package
(``costwarden/static``), every URL under the ASGI ``root_path``.

The rules -- roles, the session cookie, CSRF tokens, JWT verification -- are the pure
functions of :mod:`costwarden.dashboard`; this package is their I/O edge. It reads through
the admin API's context and its :class:`~costwarden.admin.access.Access`, so a page shows
and changes exactly what the same principal may through the admin API.
"""
