// Starts Swagger UI on the gateway's own OpenAPI document. A file, not an inline
// script, so the page's Content-Security-Policy can allow scripts from 'self' only.
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    // The session cookie (path /docs) authenticates this fetch; "Authorize"
    // takes a bearer token for "Try it out" on the /v1 routes.
    url: "/docs/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // Swagger UI would otherwise send the document to swagger.io's validator.
    validatorUrl: null,
    tryItOutEnabled: false,
  });
});
