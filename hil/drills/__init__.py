"""The failover drills: one fault each with its expected outcome, measured the same way on
every kind of target (hil.lab), each writing a report (hil.drills.report)."""
