"""One module per kind of model spec, each with `check(spec, probe_hub)` and `boot(spec)`; the table that
maps a parsed spec's kind to its module is `mechclaims.models.specs.KINDS`."""
