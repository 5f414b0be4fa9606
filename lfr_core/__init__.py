"""Code shared by the edge uploader, the Lambda functions and the admin CLI.

Shipped to Lambda inside the layer, so it must import nothing from `functions`,
`edge_uploader`, `lfr_cli` or `infra`.
"""
