"""gRPC: TF Serving's PredictionService and ModelService, KServe v2's GRPCInferenceService and
grpc.health.v1, served by each front end beside HTTP, through the same outline and engine.

The messages come from protos/ (generated at build time by ``python -m service.rpc.build``),
written for wire compatibility with the clients' own, so a front end reads a TensorProto
without importing TensorFlow.
"""
