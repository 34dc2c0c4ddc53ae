"""The Open Inference Protocol v2 over gRPC, in front of a graph and at its steps.

``front`` serves ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health``
(``serve --grpc-port``); ``steps`` calls ``grpc://`` / ``grpcs://`` step URLs;
``server`` and ``client`` are the lean transport for both in clear text (on
graph_router.http2), ``wire`` gRPC's message framing, timeouts and status trailers;
``convert`` turns V2 JSON into protobuf and back; ``status`` maps gRPC codes to HTTP
statuses and back; ``urls`` reads step URLs without importing grpcio. The messages are
generated from ``_proto/grpc_predict_v2.proto`` by ``scripts/gen-protos.sh``.

Importing this package imports nothing heavy: graphs without gRPC never load grpcio.
"""
