"""ingestd: Fleet's central ingest server (aiohttp + PostgreSQL)."""
