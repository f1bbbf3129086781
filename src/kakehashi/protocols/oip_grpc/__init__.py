"""The Open Inference Protocol v2 gRPC service: `.proto` definitions and the stubs generated from them.

The stubs are committed; `scripts/generate-grpc-stubs` regenerates them after a `.proto` change. The messages
live in protobuf package `inference`, as the protocol requires, so this package cannot be imported into a
process that has also imported `tritonclient.grpc` (both register `inference.*` in protobuf's default pool).
"""
