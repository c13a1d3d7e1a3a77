"""Pure analysis: each check takes data (DataFrames, dicts) and thresholds, returns tables and Findings."""
