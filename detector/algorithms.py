"""Names of the detector's algorithms, importable without loading scikit-learn: every
`wattwatch` command builds the CLI, which lists them."""

SEASONAL = "seasonal-iforest"  # the default: seasonal, physical and contextual features
RAW = "iforest-raw"  # the old system's baseline: IsolationForest on the raw columns
DEFAULT_MODEL = SEASONAL
ALGORITHMS = (SEASONAL, RAW)
