"""The board's hardware as the firmware sees it: pure policies fed by hal, and the thin monitors
that poll hal and carry the policies' actions out."""
