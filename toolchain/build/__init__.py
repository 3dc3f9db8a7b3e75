"""`edgeq build` and its commands, in the order a build runs them:

training (settings covering every profile, the merged and branch runs) -> device_search (a configuration
per profile) -> branch (merged integers or an int8 branch) -> device (export, validate, package, report)
-> pipeline (the whole build, atomic and locked). ptq_table and export_one are the `quantize` and `export`
commands, revalidate the `validate` command; fingerprint keys the cached run, and manifest, package, sizes
and report write a package's files.
"""
