"""HTTP/2 (RFC 9113) and HPACK (RFC 7541), sans-IO, for the lean gRPC transport.

``connection`` is the frame layer and its state machine, ``hpack`` header compression,
``huffman`` HPACK's string code. The asyncio glue is in graph_router.grpc.server and
graph_router.grpc.client.
"""
