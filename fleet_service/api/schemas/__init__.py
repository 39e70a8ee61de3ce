"""What the API answers, one module per domain: the shapes `/openapi.json` describes and the dashboard reads.

Every model forbids keys it does not declare (`additionalProperties: false` in the schema), so a route that
starts answering a key of its own fails its response validation (and tests/fleet_service/api/test_openapi_responses.py)
instead of drifting silently. The field order is the key order of the JSON the API has always answered.
"""
