"""`/docs`: the OpenAPI document as a page a person reads (Swagger UI, served from
the `swagger-ui-bundle-v2` package's files, never a CDN)."""
