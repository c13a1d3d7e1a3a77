"""perfbook.web: route templates compared across frameworks, the RateLimit headers."""
from __future__ import annotations

import pytest

from perfbook.web import RATELIMIT_HEADERS, route_key


@pytest.mark.parametrize("express, starlette, key", [
    ("/api/products/:id", "/api/products/{id}", "/api/products/{}"),
    ("/api/users/:userId/orders/:orderId", "/api/users/{user_id}/orders/{order_id}", "/api/users/{}/orders/{}"),
    # Text after a parameter is literal in Express (path-to-regexp) as in Starlette: kept.
    ("/files/:name.json", "/files/{name}.json", "/files/{}.json"),
    ("/flights/:from-:to", "/flights/{src}-{dst}", "/flights/{}-{}"),
    # An Express regex constraint and a Starlette converter are part of the parameter.
    (r"/items/:id(\d+)", "/items/{id:int}", "/items/{}"),
    ("/static/:path", "/static/{path:path}", "/static/{}"),
    ("/health", "/health", "/health"),
])
def test_route_key_matches_express_and_starlette_spellings(express, starlette, key):
    assert route_key(express) == route_key(starlette) == key


def test_route_key_keeps_a_suffix_apart_from_the_bare_route():
    # /files/:name and /files/:name.json are two routes in Express: they must not merge.
    assert route_key("/files/:name") != route_key("/files/:name.json")


def test_route_key_takes_any_value():
    assert route_key(None) == "None"


def test_ratelimit_headers_are_lower_case():
    assert all(h == h.lower() for h in RATELIMIT_HEADERS)
    assert {"ratelimit-remaining", "x-ratelimit-remaining"} <= set(RATELIMIT_HEADERS)
