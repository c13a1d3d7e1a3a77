"""The demo stack: a degraded miniature of the runbook's service on real PostgreSQL and
Prometheus, with switchable faults and their ground truth (docs/demo.md).

Modules: :mod:`.stack` (Stack: start, drive, params, stop), :mod:`.scenarios` (faults,
scenarios, expected findings), :mod:`.postgres`, :mod:`.prometheus`, :mod:`.external`
(AI-API stand-in), :mod:`.service` (the demo API), :mod:`.traffic` (the driver),
:mod:`.seed` (schema, seed data, seeded-cluster cache, DB faults).
"""
