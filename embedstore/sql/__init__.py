"""Named SQL queries, run with `embedstore sql --file NAME`."""
