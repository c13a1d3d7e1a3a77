"""HTTP vocabulary shared by sources and checks (pure): route templates and the RateLimit
response headers.

- :func:`route_key`: a route template with its parameters made anonymous, so the same
  route compares equal whichever framework wrote it (Express ``/api/products/:id``,
  Starlette/FastAPI ``/api/products/{id}``);
- :data:`RATELIMIT_HEADERS`: the rate-limit headers a probe keeps and a check looks for;
- :data:`REJECTED_SUFFIX`: how the load generator names requests rejected with HTTP 429,
  and how the load-test check finds them.
"""
from __future__ import annotations

import re

__all__ = ["route_key", "RATELIMIT_HEADERS", "REJECTED_SUFFIX"]

# A path parameter: Express's ``:name`` (an identifier, optionally with a regex constraint
# ``:id(\d+)``), or Starlette's ``{name}`` / ``{name:converter}``. Text after the name —
# ``.json`` in ``/files/:name.json``, ``-`` in ``/flights/:from-:to`` — is literal in
# Express (path-to-regexp), as it is in ``/files/{name}.json``, so it is kept.
_PARAM = re.compile(r":[A-Za-z_$][\w$]*(?:\([^)]*\))?|\{[^{}/]*\}")


def route_key(route: object) -> str:
    """``route`` with each path parameter replaced by ``{}``: ``/api/products/:id`` and
    ``/api/products/{id}`` both give ``/api/products/{}``; ``/files/:name.json`` and
    ``/files/{name}.json`` both give ``/files/{}.json`` (the suffix is part of the route)."""
    return _PARAM.sub("{}", str(route))


#: Rate-limit response headers: the IETF draft's (``RateLimit-*``, ``RateLimit`` and
#: ``RateLimit-Policy``) and the older ``X-RateLimit-*`` (express-rate-limit's legacy headers), lower-cased.
RATELIMIT_HEADERS = ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit", "ratelimit-policy",
                     "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")

#: The load generator (sources/locustfile.py) counts requests rejected with HTTP 429 under
#: "<name> [429]"; the load-test check (checks/loadtest.py) reads them back by this suffix.
REJECTED_SUFFIX = " [429]"
