"""faust wiring around processor: the stream topology lives here."""
