"""Models the suite trains itself, one module per paper set-up."""
