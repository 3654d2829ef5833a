"""Delivering a batch to ingestd: the HTTP client (`client`, over one kept-alive HTTP/1.1
connection: `http11`), what an answer means (`answers`), the bodies as they go on the wire and
the format negotiation (`wire`), and the upload cap for metered links (`uploadcap`).
"""

from pusher.delivery.answers import MAX_ANSWER_BYTES, classify, printable
from pusher.delivery.client import IngestClient, user_agent
from pusher.delivery.uploadcap import UploadCap, drain_seconds
from pusher.delivery.wire import Negotiation, WireBody, encode, gzip_body, takes_columnar

__all__ = [
    "MAX_ANSWER_BYTES",
    "IngestClient",
    "Negotiation",
    "UploadCap",
    "WireBody",
    "classify",
    "drain_seconds",
    "encode",
    "gzip_body",
    "printable",
    "takes_columnar",
    "user_agent",
]
