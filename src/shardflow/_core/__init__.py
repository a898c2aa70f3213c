"""What several parts of shardflow share (private): the AWS edge (clients, signing,
the one error map), validation, backoff, lifecycle, logs, metrics and tracing helpers,
the protobuf codec under the KPL aggregate format, and the demo/CLI resources."""
