"""Delivering a batch to ingestd: the HTTP client (`client`: one kept-alive session, the
negotiation of the columnar encoding, the bodies as they go on the wire), what an answer means
(`answers`), and the upload cap for metered links (`uploadcap`).
"""

from pusher.delivery.answers import MAX_ANSWER_BYTES, Delivered, classify, printable
from pusher.delivery.client import USER_AGENT, IngestClient, WireBody, gzip_body, takes_columnar
from pusher.delivery.uploadcap import UploadCap, drain_seconds

__all__ = [
    "MAX_ANSWER_BYTES",
    "USER_AGENT",
    "Delivered",
    "IngestClient",
    "UploadCap",
    "WireBody",
    "classify",
    "drain_seconds",
    "gzip_body",
    "printable",
    "takes_columnar",
]
