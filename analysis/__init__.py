"""privagg analysis: trade-off sweeps, reports, plots, audits and the ``privagg`` CLI."""
