"""Hot-standby pair election: wire format and sans-IO state machine, kept free of IO so the
whole protocol can be tested by jumping time instead of sleeping."""
