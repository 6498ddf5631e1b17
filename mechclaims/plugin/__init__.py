"""The pytest side of mechclaims, one module per feature (as pytest's own plugins are):

- options:     command-line options, parsed and validated once into `Options` (config.stash)
- session:     the run's state: the engine's Settings, the resolved models, each item's Result
- collection:  `CLAIMS` lists -> one item per (claim, model); the claim test
- regressions: one `regression[<claim>][<model>]` item per claim for models with a baseline
- reporting:   results.json, report.html and baselines written once at the end; xdist merging
- cluster:     --cluster: one task per model on a Dask cluster, merged into the one run

Loaded by the `pytest11` entry point (`pip install mechclaims` is enough) or `-p mechclaims.plugin`.
"""

pytest_plugins = [
    "mechclaims.plugin.options",
    "mechclaims.plugin.session",
    "mechclaims.plugin.collection",
    "mechclaims.plugin.regressions",
    "mechclaims.plugin.reporting",
    "mechclaims.plugin.cluster",
]
