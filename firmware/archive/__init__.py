"""The archive tier: committed segments, their catalog rows, an index and the evidence log's
cosigned checkpoints copied to an S3-compatible store (docs/ARCHIVE.md)."""
