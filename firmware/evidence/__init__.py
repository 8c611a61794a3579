"""The evidence layer: an append-only RFC 6962 Merkle log of committed segments and audit
events, signed checkpoints (C2SP signed-note / tlog-checkpoint) and the peer's cosignatures
(C2SP tlog-cosignature v1).

`verifier` holds every check and imports nothing from this package, so it can be shipped
verbatim inside an export; `note` signs, `merkle` builds the tree and its proofs over a node
store, `nodes_sqlite` is the on-disk node store."""
