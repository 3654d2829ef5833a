"""ingestd's HTTP handlers: headers and bodies in, answers out. They call the ingest use case
(`ingestd.ingest`) and storage functions (`ingestd.storage`) and hold no SQL.

    ingest.py    POST /api/fleet/ingest (token, limits, body, parse → use case → answer)
    admin.py     the operators' read API, a sub-application behind the admin token
    energy.py    its energy answers: hourly, daily (local days), completeness
    params.py    the read API's parameters, checked
    service.py   /healthz, /readyz, /metrics, /api/fleet/openapi.json
    http.py      what they share: JSON answers, the database-unavailable errors, a pooled connection
"""
