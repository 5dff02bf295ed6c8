"""Cloudflare offload, sidecar side: batch messages into Cloudflare Queues (through the
Worker's /enqueue or the Queues REST API), results and dead letters pulled back, and
certificates stored in R2 through its S3-compatible API. The Worker itself is in
`worker/` (JavaScript, run by workerd)."""
