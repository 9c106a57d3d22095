"""The feedback loop's decision and its record: gates (promote or hold back a round) and the HTML report.

`gates` reads a recipe's gate list and checks it against an `align evaluate policy` manifest;
`report` writes report.html from per-round summaries. Both are libraries the loop calls; neither
runs a stage.
"""
