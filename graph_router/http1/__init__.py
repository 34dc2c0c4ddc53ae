"""HTTP/1.1 framing, sans-IO: bytes in, events out, no sockets.

The asyncio glue (:mod:`graph_router.httpserver`, :mod:`graph_router.httpclient`) only
moves bytes between a transport and these readers, so every framing rule can be tested
byte by byte, and differentially against h11. llhttp (through httptools) does the
tokenising; the decisions of RFC 9110/9112 that a proxy must get right live here:

- :mod:`.rules`: what both directions share (which answers carry a body, hop-by-hop
  names, the head-size meter that enforces limits while bytes arrive).
- :mod:`.request_reader`: requests a client sends to the router.
- :mod:`.response_reader`: answers a model service sends back.
- :mod:`.content_coding`: bounded decoding of ``Content-Encoding`` for bodies the
  router must read.
"""
