"""The HTTP transport under the adapters: `sender` (paced, timed, classified
calls), `pacing` (rate windows and the in-flight cap per backend account) and
`classify` (status and `Retry-After`). It depends on nothing above `backends/`,
so the dispatcher can use it without the two importing each other."""
